"""evaluate: one trained model on the held-out test split.

Everything the paper reports and a bit more: loss, top-1/top-3 accuracy,
macro/weighted F1, one-vs-rest macro ROC-AUC, per-class precision/recall/F1, the
confusion matrix and the most-confused class pairs (the paper's error analysis).
Classes absent from the test split are left out of the macro averages and AUC,
and metrics.json says which they were, rather than crashing or averaging in zeros.

It also measures how varied the predictions are and flags a degenerate model (one
that predicts (nearly) one class, or whose features do not vary), with the reason in
words (`degenerate`, `degenerate_reason`, `prediction_diversity` in metrics.json);
see fauna.score.evaluation for the measures and thresholds.

It writes the penultimate-layer features of the test images (features.npz), which the
t-SNE step reuses instead of running the model again.

For the report it keeps small thumbnails of misclassified test images (a few per
most-confused pair, the most confident mistakes first): a user sees what the model
mixed up faster than they read it (`misclassified/*.jpg`, indexed in misclassified.json).
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from fauna import logs, timing
from fauna.config import CompareConfig, Config, EvaluateConfig
from fauna.contracts import CONFUSION_PNG, DATA_STEPS, EVALUATE_STEP, TRAIN_STEP, EvalMetrics
from fauna.data.dataset import CLASSES, SOURCE, carry_forward, write_json
from fauna.model.artifact import model_info
from fauna.report.extras import MISCLASSIFIED, PER_CLASS_COLUMNS, PER_CLASS_CSV
from fauna.score.evaluation import (
    FEATURES,
    EvaluationError,
    Scored,
    read_source,
    score_model,
)
from fauna.score.metrics import METRIC_KEYS, SPECS
from fauna.score.policy import PREDICTIONS
from fauna.step_output import require_output, step_output

log = logging.getLogger(__name__)

STEP = EVALUATE_STEP
THUMBNAIL_PX = 64  # the longer side; small enough to inline dozens in one HTML file
THUMBNAILS_PER_PAIR = 4

__all__ = ["EvaluationError", "evaluate_model"]


def _write_tables(out: Path, scored: Scored, per_class: list[dict[str, Any]]) -> None:
    """per_class.csv and predictions.csv (one row per test image)."""
    with (out / PER_CLASS_CSV).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, list(PER_CLASS_COLUMNS))
        writer.writeheader()
        writer.writerows(per_class)
    classes, probs = scored.classes, scored.probs
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "true", "pred", "confidence"])
        rows = zip(scored.ids, scored.y_true, probs.argmax(axis=1), probs.max(axis=1), strict=True)
        for i, t, p, conf in rows:
            writer.writerow([i, classes[t], classes[p], f"{conf:.6f}"])


def _write_features(out: Path, scored: Scored) -> None:
    """The test images' penultimate features, so t-SNE need not load and run the model again."""
    if scored.features is None:  # no named penultimate layer: t-SNE needs the model
        return
    np.savez(
        out / FEATURES,
        features=scored.features.reshape(len(scored.ids), -1).astype(np.float32),
        labels=scored.y_true.astype(np.int64),
        ids=np.array(scored.ids),
        classes=np.array(scored.classes),
        backbone=np.array(scored.backbone),
    )


def _thumbnail(encoded: bytes) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(encoded)) as img:
        img = img.convert("RGB")
        img.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def pick_misclassified(scored: Scored, pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Up to THUMBNAILS_PER_PAIR mistakes per confused pair, the most confident first."""
    classes, pred = scored.classes, scored.probs.argmax(axis=1)
    conf = scored.probs.max(axis=1)
    picked = []
    for pair in pairs:
        t, p = classes.index(pair["true"]), classes.index(pair["predicted"])
        hits = np.flatnonzero((scored.y_true == t) & (pred == p))
        hits = sorted(hits, key=lambda i: (-conf[i], scored.ids[i]))[:THUMBNAILS_PER_PAIR]
        picked += [
            {"id": scored.ids[i], "true": pair["true"], "predicted": pair["predicted"]}
            | {"confidence": round(float(conf[i]), 4)}
            for i in hits
        ]
    return picked


def _write_misclassified(
    out: Path, data_dir: Path, scored: Scored, pairs: list[dict[str, Any]]
) -> int:
    """Thumbnails of the picked mistakes (one more pass over the test shards) and their index."""
    from fauna.data.records import iter_records

    picked = pick_misclassified(scored, pairs)
    wanted = {p["id"]: n for n, p in enumerate(picked)}
    folder = out / MISCLASSIFIED
    folder.mkdir()
    for rec in iter_records(data_dir / "test") if wanted else ():
        n = wanted.pop(rec.id, None)
        if n is not None:
            (folder / f"{n:03d}.jpg").write_bytes(_thumbnail(rec.encoded))
            picked[n]["file"] = f"{MISCLASSIFIED}/{n:03d}.jpg"
        if not wanted:
            break
    images = [p for p in picked if "file" in p]
    write_json(out / f"{MISCLASSIFIED}.json", {"size": THUMBNAIL_PX, "images": images})
    return len(images)


def evaluate_model(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    cfg: EvaluateConfig,
    policy: CompareConfig | None = None,
) -> dict:
    """Test-split metrics for one model; writes metrics.json, plots and CSVs into `out`.

    Also predictions.npz (fauna.score.policy.PREDICTIONS): each test image's true label and
    predicted probabilities by content hash, for the champion policy's paired comparisons.
    """
    from fauna.plots import plot_confusion

    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    require_output(model_dir, TRAIN_STEP, role="--model")
    require_output(data_dir, DATA_STEPS, role="--data")
    scored = score_model(model_dir, data_dir, cfg.top_confused_pairs, policy=policy)
    timing.note(backbone=scored.backbone)
    info = model_info(model_dir)
    source = read_source(data_dir, model_dir)
    m = dict(scored.metrics)
    cm = np.array(m.pop("confusion_matrix"))
    per_class = m.pop("per_class")
    metrics = EvalMetrics(
        backbone=scored.backbone,
        weights=info.get("weights"),
        image_size=scored.image_size,
        synthetic=bool(source.get("synthetic", True)),
        rest=m,
    ).to_json()
    with timing.phase("data_out"), step_output(out, STEP) as tmp:
        write_json(tmp / "confusion_matrix.json", {"labels": scored.classes, "counts": cm.tolist()})
        plot_confusion(
            cm,
            scored.classes,
            tmp / CONFUSION_PNG,
            f"{scored.backbone}: confusion matrix (rows normalised, {m['n_test']} test images)",
        )
        _write_tables(tmp, scored, per_class)
        scored.predictions().save(tmp / PREDICTIONS)
        _write_features(tmp, scored)
        _write_misclassified(tmp, data_dir, scored, m["most_confused"])
        write_json(tmp / EvalMetrics.FILE, metrics)
        carry_forward((CLASSES, SOURCE), (data_dir, model_dir), tmp)
    shown = "  ".join(f"{s.label} {s.format(m[s.key])}" for s in SPECS)
    log.info(
        "%s: %s  (%s test images, chance top-1 %.4f)",
        scored.backbone,
        shown,
        m["n_test"],
        1 / len(scored.classes),
    )
    return metrics


def add_arguments(parser: Any) -> None:
    parser.add_argument("--model", required=True, help="train step output folder (model.keras)")
    parser.add_argument("--data", required=True, help="split or augment step output folder")
    parser.add_argument("--out", required=True, help="folder for metrics.json, plots, CSVs")


def run(args: Any, cfg: Config) -> int:
    """The summary is logged once; the JSON goes to stdout only for a pipe or a file."""
    metrics = evaluate_model(
        Path(args.model), Path(args.data), Path(args.out), cfg.evaluate, cfg.compare
    )
    keys = ("backbone", *METRIC_KEYS, "degenerate", "degenerate_reason")
    logs.result({k: metrics[k] for k in keys})
    return 0
