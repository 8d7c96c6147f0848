"""evaluate: one trained model on the held-out test split.

Everything the paper reports and a bit more: loss, top-1/top-3 accuracy,
macro/weighted F1, one-vs-rest macro ROC-AUC, per-class precision/recall/F1, the
confusion matrix and the most-confused class pairs (the paper's error analysis).
Classes absent from the test split are left out of the macro averages and AUC,
and metrics.json says which they were, rather than crashing or averaging in zeros.

It also measures how varied the predictions are and flags a degenerate model (one
that predicts (nearly) one class, or whose features do not vary), with the reason in
words (`degenerate`, `degenerate_reason`, `prediction_diversity` in metrics.json);
see fauna.evaluation for the measures and thresholds.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fauna.artifact import model_info
from fauna.config import CompareConfig, Config, EvaluateConfig
from fauna.dataset import CLASSES, SOURCE, carry_forward, write_json
from fauna.evaluation import METRICS, EvaluationError, Scored, read_source, score_model
from fauna.metrics import METRIC_KEYS, SPECS
from fauna.outputs import require_output, step_output
from fauna.policy import PREDICTIONS

log = logging.getLogger(__name__)

STEP = "evaluate"
DATA_STEPS = ("split", "augment")

__all__ = ["EvaluationError", "evaluate_model"]


def _write_tables(out: Path, scored: Scored, per_class: list[dict[str, Any]]) -> None:
    """per_class.csv and predictions.csv (one row per test image)."""
    with (out / "per_class.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["class", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(per_class)
    classes, probs = scored.classes, scored.probs
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "true", "pred", "confidence"])
        rows = zip(scored.ids, scored.y_true, probs.argmax(axis=1), probs.max(axis=1), strict=True)
        for i, t, p, conf in rows:
            writer.writerow([i, classes[t], classes[p], f"{conf:.6f}"])


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    cfg: EvaluateConfig,
    policy: CompareConfig | None = None,
) -> dict:
    """Test-split metrics for one model; writes metrics.json, plots and CSVs into `out`.

    Also predictions.npz (fauna.policy.PREDICTIONS): each test image's true label and
    predicted probabilities by content hash, for the champion policy's paired comparisons.
    """
    from fauna.plots import plot_confusion

    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    require_output(model_dir, "train", role="--model")
    require_output(data_dir, DATA_STEPS, role="--data")
    scored = score_model(model_dir, data_dir, cfg.top_confused_pairs, policy=policy)
    info = model_info(model_dir)
    source = read_source(data_dir, model_dir)
    m = dict(scored.metrics)
    cm = np.array(m.pop("confusion_matrix"))
    per_class = m.pop("per_class")
    metrics = {
        "backbone": scored.backbone,
        "weights": info.get("weights"),
        "image_size": scored.image_size,
        "synthetic": bool(source.get("synthetic", True)),
        **m,
    }
    with step_output(out, STEP) as tmp:
        write_json(tmp / "confusion_matrix.json", {"labels": scored.classes, "counts": cm.tolist()})
        plot_confusion(
            cm,
            scored.classes,
            tmp / "confusion_matrix.png",
            f"{scored.backbone}: confusion matrix (rows normalised, {m['n_test']} test images)",
        )
        _write_tables(tmp, scored, per_class)
        scored.predictions().save(tmp / PREDICTIONS)
        write_json(tmp / METRICS, metrics)
        carry_forward((CLASSES, SOURCE), (data_dir, model_dir), tmp)
    shown = "  ".join(f"{s.label} {s.format(m[s.key])}" for s in SPECS)
    log.info(f"{scored.backbone}: {shown}  (n={m['n_test']})")
    return metrics


def add_arguments(parser: Any) -> None:
    parser.add_argument("--model", required=True, help="train step output folder (model.keras)")
    parser.add_argument("--data", required=True, help="split or augment step output folder")
    parser.add_argument("--out", required=True, help="folder for metrics.json, plots, CSVs")


def run(args: Any, cfg: Config) -> int:
    metrics = evaluate_model(
        Path(args.model), Path(args.data), Path(args.out), cfg.evaluate, cfg.compare
    )
    shown = {k: metrics[k] for k in ("backbone", *METRIC_KEYS, "degenerate", "degenerate_reason")}
    print(json.dumps(shown))
    return 0
