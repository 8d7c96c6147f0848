"""Reading the per-backbone step outputs that a comparison is made of.

Inputs are the train, evaluate and t-SNE outputs of each backbone, in any order
(KFP's `dsl.Collected` gives no order guarantee): they are matched by the backbone
name each one records. Each folder must be a completed output of its step.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fauna.contracts import (
    CONFUSION_PNG,
    EVALUATE_STEP,
    TRAIN_STEP,
    TSNE_INFO,
    TSNE_PNG,
    TSNE_STEP,
    EvalMetrics,
    History,
)
from fauna.data.dataset import MANIFEST, read_json, read_manifest
from fauna.errors import FaunaError
from fauna.model.artifact import HISTORY_JSON, HISTORY_PNG, model_backbone, model_info
from fauna.paper import PAPER_METRICS, paper_reference
from fauna.report.extras import PER_CLASS_CSV, backbone_extras
from fauna.score.metrics import METRIC_KEYS, metric_spec
from fauna.score.policy import PREDICTIONS, Predictions
from fauna.step_output import require_output


class CompareError(FaunaError):
    """The inputs of the comparison do not fit together."""


@dataclass
class Inputs:
    """The step outputs by backbone name, and the order the report shows them in."""

    evals: dict[str, Path]
    models: dict[str, Path]
    tsnes: dict[str, Path]
    order: list[str]


def _index(dirs: Sequence[Path], kind: str, name_of: Callable[[Path], str]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in map(Path, dirs):
        name = str(name_of(d))
        if name in found:
            raise CompareError(f"two {kind} outputs for backbone {name!r}: {found[name]} and {d}")
        found[name] = d
    return found


def _recorded_backbone(filename: str) -> Callable[[Path], str]:
    def name_of(d: Path) -> str:
        path = d / filename
        if not path.is_file():
            raise CompareError(f"no {filename} in {d}: is this the right step output?")
        return json.loads(path.read_text())["backbone"]

    return name_of


def gather(
    model_dirs: Sequence[Path],
    eval_dirs: Sequence[Path],
    tsne_dirs: Sequence[Path],
    preferred_order: Sequence[str] = (),
) -> Inputs:
    """Check and match the inputs; backbones in `preferred_order` first, the rest sorted."""
    if not eval_dirs:
        raise CompareError("nothing to compare: no evaluation outputs given")
    for dirs, step, role in (
        (model_dirs, TRAIN_STEP, "--models"),
        (eval_dirs, EVALUATE_STEP, "--evaluations"),
        (tsne_dirs, TSNE_STEP, "--tsnes"),
    ):
        for d in dirs:
            require_output(d, step, role=role)
    evals = _index(eval_dirs, "evaluate", lambda d: EvalMetrics.read(d).backbone)
    models = _index(model_dirs, "train", model_backbone)
    tsnes = _index(tsne_dirs, "t-SNE", _recorded_backbone(TSNE_INFO))
    for kind, found in (("train", models), ("t-SNE", tsnes)):
        extra = sorted(set(found) - set(evals))
        if extra:
            raise CompareError(f"{kind} outputs without an evaluation: {', '.join(extra)}")
    order = [b for b in preferred_order if b in evals]
    order += sorted(b for b in evals if b not in order)
    return Inputs(evals, models, tsnes, order)


def _copy_image(src: Path, images: Path, name: str) -> str | None:
    if not src.is_file():
        return None
    shutil.copyfile(src, images / name)
    return f"images/{name}"


def _history_image(model_dir: Path | None, images: Path, backbone: str) -> str | None:
    """The train step's curves; re-plotted from history.json when the PNG is missing."""
    if model_dir is None:
        return None
    copied = _copy_image(model_dir / HISTORY_PNG, images, f"{backbone}-history.png")
    if copied is None and (model_dir / HISTORY_JSON).is_file():
        from fauna.plots import plot_history  # matplotlib, only when a plot must be drawn

        plot_history(History.read(model_dir).epochs, images / f"{backbone}-history.png", backbone)
        copied = f"images/{backbone}-history.png"
    return copied


def _tsne_part(tsne_dir: Path | None, images: Path, backbone: str) -> dict[str, Any]:
    """The t-SNE image, or why there is none (features without spread are not plotted)."""
    if tsne_dir is None:
        return {}
    info = read_json(tsne_dir / TSNE_INFO)
    if info.get("degenerate_reason"):
        return {"tsne_skipped": info["degenerate_reason"]}
    image = _copy_image(tsne_dir / TSNE_PNG, images, f"{backbone}-tsne.png")
    return {"tsne": image} if image else {}


def backbone_row(inputs: Inputs, backbone: str, images: Path) -> dict[str, Any]:
    """Everything the report shows of one backbone; its images copied into `images`."""
    ev = inputs.evals[backbone]
    model_dir = inputs.models.get(backbone)
    evaluated = EvalMetrics.read(ev)
    m = evaluated.to_json()
    info = model_info(model_dir) if model_dir is not None else {}
    ref = paper_reference(backbone)
    figures = {
        "history": _history_image(model_dir, images, backbone),
        "confusion": _copy_image(ev / CONFUSION_PNG, images, f"{backbone}-confusion.png"),
        **_tsne_part(inputs.tsnes.get(backbone), images, backbone),
    }
    return {
        "backbone": backbone,
        **{k: m.get(k) for k in METRIC_KEYS},
        "n_test": evaluated.n_test,
        "averaging_note": m.get("averaging_note", ""),
        "most_confused": m.get("most_confused", []),
        "degenerate": evaluated.degenerate,
        "degenerate_reason": evaluated.degenerate_reason,
        "prediction_diversity": m.get("prediction_diversity"),
        "weights": info.get("weights", evaluated.weights),
        "image_size": info.get("image_size", evaluated.image_size),
        "epochs_run": info.get("epochs_run"),
        "params": info.get("params"),
        "train_seconds": info.get("train_seconds"),
        "images_per_second": info.get("images_per_second"),
        "paper": None
        if ref is None
        else {"model": ref.model, **{f: getattr(ref, f) for f, _ in PAPER_METRICS.values()}},
        "images": {k: v for k, v in figures.items() if k != "tsne_skipped" and v},
        "tsne_skipped": figures.get("tsne_skipped"),
        **backbone_extras(ev, model_dir, images, backbone),
    }


def validation_score(model_dir: Path | None, metric: str) -> float | None:
    """The model's validation score at the epoch whose weights it kept (None: unknown), for
    the policy's tie-break: the metric spec's validation counterpart in history.json
    (higher is better: a loss is negated), minus val_loss where it has none."""
    if model_dir is None or not (Path(model_dir) / HISTORY_JSON).is_file():
        return None
    entry = History.read(model_dir).entry(model_info(model_dir).get("weights_from_epoch"))
    if entry is None:
        return None
    spec = metric_spec(metric)
    if spec.validation and entry.get(spec.validation) is not None:
        value = float(entry[spec.validation])
        return value if spec.higher_is_better else -value
    return None if entry.get("val_loss") is None else -float(entry["val_loss"])


def load_predictions(eval_dir: Path) -> Predictions | None:
    """An evaluation's per-image predictions (None for outputs from before they were kept)."""
    path = Path(eval_dir) / PREDICTIONS
    return Predictions.load(path) if path.is_file() else None


def per_class_f1(eval_dir: Path) -> tuple[dict[str, float], dict[str, int]]:
    """F1 and test support per class from an evaluation's per_class.csv ({} when absent)."""
    path = Path(eval_dir) / PER_CLASS_CSV
    if not path.is_file():
        return {}, {}
    with path.open(newline="") as fh:
        entries = list(csv.DictReader(fh))
    return (
        {e["class"]: float(e["f1"]) for e in entries},
        {e["class"]: int(e["support"]) for e in entries},
    )


def data_summary(data_dir: Path | None, classes: list[str], test_support: dict[str, int]) -> dict:
    """Images per class and split: the manifest when the data folder is given, else test only."""
    counts: dict[str, dict[str, int]] = {c: {"test": test_support.get(c, 0)} for c in classes}
    splits = ["test"]
    if data_dir is not None and (Path(data_dir) / MANIFEST).is_file():
        manifest = read_manifest(Path(data_dir) / MANIFEST)
        tally = Counter((row.get("split", ""), row.get("label", "")) for row in manifest)
        present = {s for s, _ in tally}
        splits = [s for s in ("train", "val", "test") if s in present] or splits
        counts = {c: {s: tally.get((s, c), 0) for s in splits} for c in classes}
    totals = {s: sum(counts[c].get(s, 0) for c in classes) for s in splits}
    return {"num_classes": len(classes), "splits": splits, "counts": counts, "totals": totals}
