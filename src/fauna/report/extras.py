"""What a backbone's row holds for the report beyond its scores: read from the step outputs.

- `per_class`: precision, recall, F1 and test support per class (evaluate's per_class.csv);
- `misclassified`: evaluate's thumbnails of misclassified test images, copied into the
  report's images/ (true -> predicted, a few per confused pair);
- `curves`: the per-epoch loss and accuracy of train and validation (history.json), from
  which the report draws every backbone on one chart per metric.

Every part is optional: an output written before a part existed gives none, and the report
leaves that part out.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Any

from fauna.contracts import History
from fauna.data.dataset import read_json
from fauna.model.artifact import HISTORY_JSON

PER_CLASS_CSV = "per_class.csv"
# Its columns, as evaluate writes them: the class, then its scores and test support.
PER_CLASS_COLUMNS = ("class", "precision", "recall", "f1", "support")
# evaluate's thumbnails of misclassified test images (a folder) and their index (<name>.json)
MISCLASSIFIED = "misclassified"
# The history keys the combined learning curves show (train, and val_ for validation).
CURVE_KEYS = ("loss", "accuracy")


def per_class_scores(eval_dir: Path) -> dict[str, dict[str, float]]:
    """class -> {precision, recall, f1, support}; {} without a per_class.csv."""
    path = Path(eval_dir) / PER_CLASS_CSV
    if not path.is_file():
        return {}
    with path.open(newline="") as fh:
        return {
            e["class"]: {k: float(e[k]) for k in PER_CLASS_COLUMNS[1:]} for e in csv.DictReader(fh)
        }


def misclassified(eval_dir: Path, images: Path, backbone: str) -> list[dict[str, Any]]:
    """The thumbnails' index entries, each `file` copied to images/<backbone>-misclassified/."""
    index = Path(eval_dir) / f"{MISCLASSIFIED}.json"
    if not index.is_file():
        return []
    folder = images / f"{backbone}-{MISCLASSIFIED}"
    kept = []
    for entry in read_json(index).get("images", []):
        src = Path(eval_dir) / entry["file"]
        if not src.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, folder / src.name)
        kept.append({**entry, "file": f"{images.name}/{folder.name}/{src.name}"})
    return kept


def curves(model_dir: Path | None) -> list[dict[str, Any]]:
    """Per epoch: its number and the train/validation loss and accuracy (no other keys)."""
    path = None if model_dir is None else Path(model_dir) / HISTORY_JSON
    if path is None or not path.is_file():
        return []
    keep = ("epoch", "phase", *CURVE_KEYS, *(f"val_{k}" for k in CURVE_KEYS))
    return [{k: h[k] for k in keep if k in h} for h in History.read(path.parent).epochs]


def backbone_extras(
    eval_dir: Path, model_dir: Path | None, images: Path, backbone: str
) -> dict[str, Any]:
    """The row's `per_class`, `misclassified` and `curves` (see the module docstring)."""
    return {
        "per_class": per_class_scores(eval_dir),
        "misclassified": misclassified(eval_dir, images, backbone),
        "curves": curves(model_dir),
    }
