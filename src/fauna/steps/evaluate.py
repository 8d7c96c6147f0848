"""Evaluate one trained model on the held-out test split.

Everything the paper reports and a bit more: loss, top-1/top-3 accuracy,
macro/weighted F1, one-vs-rest macro ROC-AUC, per-class precision/recall/F1, the
confusion matrix and the most-confused class pairs (the paper's error analysis).
Classes absent from the test split are left out of the macro averages and AUC,
and metrics.json says which they were, rather than crashing or averaging in zeros.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fauna.config import Config, EvaluateConfig
from fauna.dataset import (
    CLASSES,
    PREPROCESS_INFO,
    SOURCE,
    carry_forward,
    display_name,
    read_classes,
    read_json,
    write_json,
)
from fauna.errors import FaunaError
from fauna.plots import save_png

log = logging.getLogger(__name__)

# Inference batch: only memory depends on it, never a result.
INFERENCE_BATCH = 64
# Matches Keras' clipping in categorical cross-entropy, so our loss equals model.evaluate's.
LOSS_EPSILON = 1e-7
TRAIN_INFO = "train_info.json"
METRICS = "metrics.json"


class EvaluationError(FaunaError):
    """A model or dataset directory cannot be evaluated (one clear line)."""


def load_trained_model(model_dir: Path) -> Any:
    """The saved Keras model, with fauna's custom layers registered first."""
    path = Path(model_dir) / "model.keras"
    if not path.is_file():
        raise EvaluationError(f"no model.keras in {model_dir}: is this a train step output?")
    if importlib.util.find_spec("fauna.model") is not None:
        importlib.import_module("fauna.model")  # registers serializable layers
    import keras

    # compile=False: inference needs no optimizer, and custom training metrics need not resolve.
    return keras.saving.load_model(path, compile=False)


def model_info(model_dir: Path) -> dict[str, Any]:
    """train_info.json (backbone, timings) or a minimal stand-in named after the folder."""
    path = Path(model_dir) / TRAIN_INFO
    info = json.loads(path.read_text()) if path.is_file() else {}
    info.setdefault("backbone", Path(model_dir).name)
    return info


def read_source(*dirs: Path) -> dict[str, Any]:
    """The first source.json found; synthetic unless proven real is the safe default."""
    for d in dirs:
        path = Path(d) / SOURCE
        if path.is_file():
            return json.loads(path.read_text())
    return {"source": "unknown", "synthetic": True}


def check_inputs(model_dir: Path, data_dir: Path) -> tuple[list[str], int]:
    """The class list and image size, checked to agree between model and data."""
    classes = read_classes(model_dir)
    data_classes = read_classes(data_dir)
    if classes != data_classes:
        raise EvaluationError(
            f"the model's classes ({len(classes)}) differ from the dataset's "
            f"({len(data_classes)}): evaluate a model on the data it was trained for"
        )
    size = int(read_json(Path(model_dir) / PREPROCESS_INFO)["image_size"])
    data_pre = Path(data_dir) / PREPROCESS_INFO
    if data_pre.is_file():
        data_size = int(read_json(data_pre)["image_size"])
        if data_size != size:
            raise EvaluationError(
                f"the model expects {size}px images but the dataset holds {data_size}px ones"
            )
    if not any((Path(data_dir) / "test").glob("part-*.tfrecord")):
        raise EvaluationError(f"no test shards in {Path(data_dir) / 'test'}")
    return classes, size


def run_inference(
    model: Any,
    data_dir: Path,
    image_size: int,
    num_classes: int,
    *,
    split: str = "test",
    keep_ids: set[str] | None = None,
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Model outputs, true label indices and ids over one split, batch by batch.

    `keep_ids` restricts the model to those images (decoding still streams all).
    """
    from tqdm import tqdm

    from fauna.inputs import make_dataset

    ds = make_dataset(
        Path(data_dir) / split, image_size, num_classes, INFERENCE_BATCH, with_ids=True
    )
    outputs: list[np.ndarray] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    for images, onehot, batch_ids in tqdm(
        ds.as_numpy_iterator(), desc=desc, unit="batch", file=sys.stderr, leave=False
    ):
        names = [i.decode() for i in batch_ids]
        if keep_ids is not None:
            mask = np.array([n in keep_ids for n in names], dtype=bool)
            if not mask.any():
                continue
            images, onehot, names = images[mask], onehot[mask], list(np.array(names)[mask])
        outputs.append(np.asarray(model.predict_on_batch(images)))
        labels.append(onehot.argmax(axis=1))
        ids.extend(names)
    if not outputs:
        raise EvaluationError(f"the {split} split of {data_dir} holds no images")
    return np.concatenate(outputs), np.concatenate(labels), ids


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], top_pairs: int
) -> dict[str, Any]:
    """All test metrics from true label indices and predicted probabilities."""
    from sklearn.metrics import (
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
        roc_auc_score,
    )

    n_classes = len(classes)
    labels = list(range(n_classes))
    y_pred = probs.argmax(axis=1)
    support = np.bincount(y_true, minlength=n_classes)
    present = [i for i in labels if support[i] > 0]
    absent = [classes[i] for i in labels if support[i] == 0]

    p_true = probs[np.arange(len(y_true)), y_true]
    loss = float(np.mean(-np.log(np.clip(p_true, LOSS_EPSILON, 1.0))))
    k = min(3, n_classes)
    top_k = np.argsort(-probs, axis=1)[:, :k]
    top3 = float(np.mean((top_k == y_true[:, None]).any(axis=1)))

    if len(present) >= 2:
        onehot = np.eye(n_classes, dtype=int)[y_true]
        roc_auc: float | None = float(
            roc_auc_score(onehot[:, present], probs[:, present], average="macro")
        )
    else:  # one class only: one-vs-rest AUC is undefined
        roc_auc = None

    precision, recall, f1, _ = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    cm = confusion_matrix(y_true, y_pred, labels=labels)
    return {
        "n_test": int(len(y_true)),
        "num_classes": n_classes,
        "loss": loss,
        "top1": float(np.mean(y_pred == y_true)),
        "top3": top3,
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=present, average="macro", zero_division=0)
        ),
        "weighted_f1": float(
            f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)
        ),
        "roc_auc": roc_auc,
        "roc_auc_classes": len(present) if roc_auc is not None else 0,
        "classes_absent_from_test": absent,
        "averaging_note": (
            "macro averages and ROC-AUC are over the classes present in the test split"
            + (f"; absent: {', '.join(absent)}" if absent else " (all present)")
        ),
        "confused_pairs_mode": "directed (true -> predicted)",
        "most_confused": most_confused_pairs(cm, classes, top_pairs),
        "per_class": [
            {
                "class": classes[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in labels
        ],
        "confusion_matrix": cm.tolist(),
    }


def most_confused_pairs(cm: np.ndarray, classes: list[str], top: int) -> list[dict[str, Any]]:
    """The largest off-diagonal counts, directed: `true` images predicted as `predicted`."""
    off = np.array(cm, dtype=np.int64)
    np.fill_diagonal(off, 0)
    support = np.asarray(cm).sum(axis=1)
    rows, cols = np.nonzero(off)
    pairs = [
        {
            "true": classes[r],
            "predicted": classes[c],
            "count": int(off[r, c]),
            "rate": float(off[r, c] / support[r]),
        }
        for r, c in zip(rows, cols, strict=True)
    ]
    pairs.sort(key=lambda p: (-p["count"], -p["rate"], p["true"], p["predicted"]))
    return pairs[:top]


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix, readable at 30 classes."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    side = max(5.0, 0.36 * n + 3.0)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    names = [display_name(c) for c in classes]
    ax.set_xticks(range(n), names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 40:  # annotate: fractions when small, whole percents (>= 1%) otherwise
        small = n <= 12
        for r in range(n):
            for c in range(n):
                v = norm[r, c]
                if v < (0.005 if small else 0.01):
                    continue
                ax.text(
                    c,
                    r,
                    f"{v:.2f}" if small else f"{round(v * 100)}",
                    ha="center",
                    va="center",
                    fontsize=9 if small else 6,
                    color="white" if v > 0.6 else "#1f2328",
                )
    return save_png(fig, path)


def evaluate_model(model_dir: Path, data_dir: Path, out: Path, cfg: EvaluateConfig) -> dict:
    """Test-split metrics for one model; writes metrics.json, plots and CSVs into `out`."""
    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    classes, image_size = check_inputs(model_dir, data_dir)
    info = model_info(model_dir)
    backbone = str(info["backbone"])
    source = read_source(data_dir, model_dir)
    model = load_trained_model(model_dir)
    log.info(f"{backbone}: predicting the test split of {data_dir}")
    probs, y_true, ids = run_inference(
        model, data_dir, image_size, len(classes), desc=f"evaluate {backbone}"
    )
    m = classification_metrics(y_true, probs, classes, cfg.top_confused_pairs)

    out.mkdir(parents=True, exist_ok=True)
    cm = np.array(m.pop("confusion_matrix"))
    per_class = m.pop("per_class")
    write_json(out / "confusion_matrix.json", {"labels": classes, "counts": cm.tolist()})
    plot_confusion(
        cm,
        classes,
        out / "confusion_matrix.png",
        f"{backbone}: confusion matrix (rows normalised, {len(y_true)} test images)",
    )
    with (out / "per_class.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, ["class", "precision", "recall", "f1", "support"])
        writer.writeheader()
        writer.writerows(per_class)
    y_pred = probs.argmax(axis=1)
    with (out / "predictions.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "true", "pred", "confidence"])
        for i, t, p, conf in zip(ids, y_true, y_pred, probs.max(axis=1), strict=True):
            writer.writerow([i, classes[t], classes[p], f"{conf:.6f}"])

    metrics = {
        "backbone": backbone,
        "weights": info.get("weights"),
        "image_size": image_size,
        "synthetic": bool(source.get("synthetic", True)),
        **m,
    }
    write_json(out / METRICS, metrics)
    carry_forward((CLASSES, SOURCE), (data_dir, model_dir), out)
    auc = "n/a" if m["roc_auc"] is None else f"{m['roc_auc']:.4f}"
    log.info(
        f"{backbone}: top1 {m['top1']:.4f}  top3 {m['top3']:.4f}  macro-F1 {m['macro_f1']:.4f}"
        f"  ROC-AUC {auc}  loss {m['loss']:.4f}  (n={m['n_test']})"
    )
    return metrics


def add_arguments(parser: Any) -> None:
    parser.add_argument("--model", required=True, help="train step output folder (model.keras)")
    parser.add_argument("--data", required=True, help="dataset folder with a test/ split")
    parser.add_argument("--out", required=True, help="folder for metrics.json, plots, CSVs")


def run(args: Any, cfg: Config) -> int:
    metrics = evaluate_model(Path(args.model), Path(args.data), Path(args.out), cfg.evaluate)
    keys = ("top1", "top3", "macro_f1", "weighted_f1", "roc_auc", "loss")
    print(json.dumps({"backbone": metrics["backbone"], **{k: metrics[k] for k in keys}}))
    return 0
