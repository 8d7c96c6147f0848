"""Scoring a trained model on a test split: what evaluate, t-SNE and publish share.

- `check_inputs`: the model and the dataset agree (classes, image size, a test split);
- `score_model`: one pass over the test split giving every metric (`classification_metrics`),
  the prediction-diversity guard (`prediction_diversity`) and the penultimate-layer
  features' spread, in memory: the evaluate step writes it out, publish uses it to
  re-score the current champion on a new test split;
- `run_inference` / `embedding_model`: the model's outputs (or its features) over a split.

The degenerate-model guard: a model that predicts (nearly) one class for every image,
or whose features are the same for every image, has learned nothing usable even when a
metric happens to rank it first (issue: a constant-output model won macro-F1 0.105 vs
0.097); nor has one whose champion metric is not above the no-skill baselines with
confidence (fauna.score.policy), or one whose outputs are not finite (a diverged model). Such a
model is flagged, with the reason in words; compare never makes it champion and publish
never promotes it. The thresholds are below.

Only NumPy is imported here; TensorFlow and Keras are imported when a model is run.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fauna.contracts import PreprocessInfo, SourceInfo
from fauna.data.dataset import read_classes
from fauna.errors import FaunaError
from fauna.logs import progress
from fauna.score.metrics import LOSS_EPSILON
from fauna.score.policy import Predictions, skill_shortfall

log = logging.getLogger(__name__)

# Inference batch: only memory depends on it, never a result.
INFERENCE_BATCH = 64
# Its penultimate-layer features of every test image (ids, labels, classes): t-SNE reads them.
FEATURES = "features.npz"

# The guard. A model is flagged as degenerate when (with >= 2 classes in the test split):
# - it predicts one class for every test image; or
# - one class takes at least DOMINANT_SHARE of its predictions while the entropy of its
#   predicted-class histogram is below MIN_ENTROPY_RATIO of the true labels' entropy (a
#   good model on an imbalanced test split predicts the big class often, but its
#   histogram follows the true one, so its ratio stays near 1); or
# - its penultimate-layer features barely differ between images: mean per-dimension
#   standard deviation below MIN_FEATURE_SPREAD of the mean absolute feature value
#   (a randomly initialised backbone in inference mode: ~1e-11; a learning model: ~0.1-1).
DOMINANT_SHARE = 0.9
MIN_ENTROPY_RATIO = 0.25
MIN_FEATURE_SPREAD = 1e-3


class EvaluationError(FaunaError):
    """A model or dataset directory cannot be evaluated (one clear line)."""


# ------------------------------------------------------------------------ inputs


def read_source(*dirs: Path) -> dict[str, Any]:
    """The first source.json found (checked: fauna.contracts.SourceInfo), its keys;
    synthetic unless proven real is the safe default."""
    found = SourceInfo.read_first(*dirs)
    return {"source": "unknown", "synthetic": True} if found is None else dict(found.rest)


def _listed(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def describe_class_difference(model_classes: list[str], data_classes: list[str]) -> str:
    """Which classes differ between a model and a dataset, in words (names, not just counts)."""
    only_model = [c for c in model_classes if c not in data_classes]
    only_data = [c for c in data_classes if c not in model_classes]
    if not only_model and not only_data:
        first = next(
            i for i, (a, b) in enumerate(zip(model_classes, data_classes, strict=False)) if a != b
        )
        return (
            f"the same {len(model_classes)} classes in another order (position {first + 1}: "
            f"the model has {model_classes[first]!r}, the dataset {data_classes[first]!r})"
        )
    parts = []
    if only_model:
        parts.append(f"only the model has {_listed(only_model)}")
    if only_data:
        parts.append(f"only the dataset has {_listed(only_data)}")
    return (
        f"the model's {len(model_classes)} classes differ from the dataset's "
        f"{len(data_classes)}: {'; '.join(parts)}"
    )


def check_inputs(model_dir: Path, data_dir: Path) -> tuple[list[str], int]:
    """The class list and image size, checked to agree between model and data."""
    classes = read_classes(model_dir)
    data_classes = read_classes(data_dir)
    if classes != data_classes:
        raise EvaluationError(
            describe_class_difference(classes, data_classes)
            + ": evaluate a model on the data it was trained for"
        )
    size = PreprocessInfo.read(model_dir).image_size
    data_info = PreprocessInfo.read_first(data_dir)
    if data_info is not None:
        data_size = data_info.image_size
        if data_size != size:
            raise EvaluationError(
                f"the model expects {size}px images but the dataset holds {data_size}px ones"
            )
    if not any((Path(data_dir) / "test").glob("part-*.tfrecord")):
        raise EvaluationError(f"no test shards in {Path(data_dir) / 'test'}")
    return classes, size


# ----------------------------------------------------------------------- inference


def penultimate_output(model: Any) -> Any:
    """The penultimate layer's output tensor: the 'embedding' layer, or the head's input."""
    for name, use_input in (("embedding", False), ("predictions", True)):
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        return layer.input if use_input else layer.output
    raise EvaluationError("the model has neither an 'embedding' nor a 'predictions' layer")


def embedding_model(model: Any) -> Any:
    """A sub-model from the raw pixels to the penultimate layer's output."""
    import keras

    return keras.Model(model.inputs, penultimate_output(model))


def with_features(model: Any) -> Any:
    """The model with a second output, its penultimate features (the same forward pass)."""
    import keras

    return keras.Model(model.inputs, [model.outputs[0], penultimate_output(model)])


def split_batches(data_dir: Path, split: str) -> int | None:
    """Inference batches in a split, by the manifest (a progress bar's total); None if unknown."""
    from fauna.data.dataset import MANIFEST, read_manifest

    path = Path(data_dir) / MANIFEST
    n = sum(r.get("split") == split for r in read_manifest(path)) if path.is_file() else 0
    return math.ceil(n / INFERENCE_BATCH) if n else None


@dataclass
class Inference:
    outputs: list[np.ndarray]  # one array per model output, rows in `ids` order
    labels: np.ndarray  # true label indices
    ids: list[str]


def run_inference(
    model: Any,
    data_dir: Path,
    image_size: int,
    num_classes: int,
    *,
    split: str = "test",
    keep_ids: set[str] | None = None,
    desc: str = "predict",
) -> Inference:
    """Model outputs, true label indices and ids over one split, batch by batch.

    `keep_ids` restricts the model to those images (decoding still streams all).
    """
    from fauna.data.input_pipeline import make_dataset

    ds = make_dataset(
        Path(data_dir) / split, image_size, num_classes, INFERENCE_BATCH, with_ids=True
    )
    outputs: list[list[np.ndarray]] = []
    labels: list[np.ndarray] = []
    ids: list[str] = []
    total = split_batches(data_dir, split)
    batches = ds.as_numpy_iterator()
    bar = progress(batches, total=total, desc=desc, unit="batch", log=log, leave=False)
    for images, onehot, batch_ids in bar:
        names = [i.decode() for i in batch_ids]
        if keep_ids is not None:
            mask = np.array([n in keep_ids for n in names], dtype=bool)
            if not mask.any():
                continue
            images, onehot, names = images[mask], onehot[mask], list(np.array(names)[mask])
        result = model.predict_on_batch(images)
        outputs.append([np.asarray(r) for r in (result if isinstance(result, list) else [result])])
        labels.append(onehot.argmax(axis=1))
        ids.extend(names)
    if not outputs:
        raise EvaluationError(f"the {split} split of {data_dir} holds no images")
    merged = [np.concatenate(parts) for parts in zip(*outputs, strict=True)]
    return Inference(merged, np.concatenate(labels), ids)


# ------------------------------------------------------------------------- metrics


def classification_metrics(
    y_true: np.ndarray, probs: np.ndarray, classes: list[str], top_pairs: int
) -> dict[str, Any]:
    """All test metrics from true label indices and predicted probabilities.

    Longer than usual: most of it is the one dict literal that is metrics.json's shape.
    """
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
    top_k = np.argsort(-probs, axis=1)[:, : min(3, n_classes)]
    top3 = float(np.mean((top_k == y_true[:, None]).any(axis=1)))

    roc_auc: float | None = None  # one class only: one-vs-rest AUC is undefined
    if len(present) >= 2:
        onehot = np.eye(n_classes, dtype=int)[y_true]
        roc_auc = float(roc_auc_score(onehot[:, present], probs[:, present], average="macro"))

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


# --------------------------------------------------------------------------- guard


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def feature_spread(features: np.ndarray) -> float:
    """How much features differ between images: mean per-dimension std / mean |value|.

    0 when every image gets the same features (or all are zero); scale-free, so it
    means the same for any layer width or activation range.
    """
    f = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    scale = float(np.mean(np.abs(f))) if f.size else 0.0
    if len(f) < 2 or scale == 0.0 or not math.isfinite(scale):
        return 0.0
    return float(np.mean(np.std(f, axis=0)) / scale)


def prediction_diversity(
    y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], spread: float | None = None
) -> dict[str, Any]:
    """How varied the predictions are, next to the truth (the guard's measurements)."""
    n = len(classes)
    predicted = np.bincount(y_pred, minlength=n)
    true = np.bincount(y_true, minlength=n)
    top = int(predicted.argmax())
    h_pred, h_true = _entropy(predicted), _entropy(true)
    return {
        "distinct_predicted": int((predicted > 0).sum()),
        "distinct_true": int((true > 0).sum()),
        "top_class": classes[top],
        "top_class_share": float(predicted[top] / max(1, predicted.sum())),
        "true_top_share": float(true.max() / max(1, true.sum())),
        "entropy_predicted": h_pred,
        "entropy_true": h_true,
        "entropy_ratio": (h_pred / h_true) if h_true > 0 else None,
        "feature_spread": spread,
    }


def degenerate_reason(diversity: dict[str, Any], n_test: int) -> str | None:
    """Why a model is flagged as degenerate, in words; None when it is not."""
    from fauna.data.dataset import display_name

    if diversity["distinct_true"] < 2:
        return None  # one true class: a single predicted class is no evidence
    top = display_name(diversity["top_class"])
    share = diversity["top_class_share"]
    ratio = diversity["entropy_ratio"]
    spread = diversity.get("feature_spread")
    reasons = []
    if diversity["distinct_predicted"] == 1:
        reasons.append(f"it predicts one class ({top}) for all {n_test} test images")
    elif share >= DOMINANT_SHARE and ratio is not None and ratio < MIN_ENTROPY_RATIO:
        reasons.append(
            f"it predicts {top} for {share:.0%} of the test images (the true share of the "
            f"largest class is {diversity['true_top_share']:.0%}); the entropy of its "
            f"predictions is {ratio:.2f} of the true labels'"
        )
    if spread is not None and spread < MIN_FEATURE_SPREAD:
        reasons.append(
            f"its penultimate-layer features are the same for every image "
            f"(relative spread {spread:.1e}, below {MIN_FEATURE_SPREAD:g})"
        )
    return "; ".join(reasons) or None


# ------------------------------------------------------------------------- scoring


@dataclass
class Scored:
    """One model's test-split evaluation, in memory."""

    backbone: str
    classes: list[str]
    image_size: int
    metrics: dict[str, Any]  # classification_metrics + prediction_diversity + the verdict
    probs: np.ndarray
    y_true: np.ndarray
    ids: list[str]
    keys: list[str]  # each image's content hash (its id where the manifest has none)
    features: np.ndarray | None = None  # penultimate layer, rows as `ids` (t-SNE reuses them)

    def predictions(self) -> Predictions:
        """What fauna.score.policy pairs two models on: answers keyed by image content."""
        return Predictions(np.array(self.keys, dtype=str), self.y_true, self.probs)


def content_keys(data_dir: Path, ids: list[str]) -> list[str]:
    """The sha256 of each image by id (from the manifest), so models pair on content."""
    from fauna.data.dataset import MANIFEST, read_manifest

    path = Path(data_dir) / MANIFEST
    by_id = {r["id"]: r["sha256"] for r in read_manifest(path)} if path.is_file() else {}
    return [by_id.get(i, i) for i in ids]


def finite_outputs(probs: np.ndarray) -> tuple[np.ndarray, str | None]:
    """Probabilities safe to score, and why the model is degenerate if some were not finite.

    A diverged model answers NaN or infinity: those rows count as a uniform guess (so every
    metric is defined, and low), and the model is flagged, never a scikit-learn traceback.
    """
    bad = ~np.isfinite(probs).all(axis=1)
    if not bad.any():
        return probs, None
    fixed = np.array(probs, dtype=np.float64)
    fixed[bad] = 1.0 / probs.shape[1]
    reason = (
        f"its outputs are not finite (NaN or infinity) for {int(bad.sum())} of {len(probs)} "
        "test images: the model diverged in training (lower the learning rate)"
    )
    return fixed, reason


def guard(
    metrics: dict[str, Any], preds: Predictions, policy: Any, not_finite: str | None
) -> str | None:
    """Every reason the model learned nothing usable, joined; None when it did."""
    reasons = [r for r in (not_finite, degenerate_reason(metrics["prediction_diversity"],
                                                        metrics["n_test"])) if r]  # fmt: skip
    if not not_finite and metrics["prediction_diversity"]["distinct_true"] >= 2:
        shortfall = skill_shortfall(preds, policy.champion_metric, policy)
        if shortfall:
            reasons.append(shortfall)
    return "; ".join(reasons) or None


def score_model(
    model_dir: Path, data_dir: Path, top_pairs: int, *, desc: str = "", policy: Any = None
) -> Scored:
    """Predict the test split once; every metric, the guards and their verdict.

    `policy` (the `compare` config section; defaults when None) names the champion
    metric and the confidence the learned-nothing guard uses.
    """
    from fauna.config import CompareConfig
    from fauna.model.artifact import load_model, model_backbone

    policy = policy or CompareConfig()
    classes, image_size = check_inputs(model_dir, data_dir)
    backbone = model_backbone(model_dir)
    model = load_model(model_dir)
    try:
        model = with_features(model)
    except EvaluationError:  # no named penultimate layer: judge the predictions alone
        log.info("%s: no 'embedding' or 'predictions' layer, feature spread not measured", backbone)
    log.info("%s: predicting the test split of %s", backbone, data_dir)
    result = run_inference(
        model, data_dir, image_size, len(classes), desc=desc or f"evaluate {backbone}"
    )
    probs, not_finite = finite_outputs(result.outputs[0])
    spread = feature_spread(result.outputs[1]) if len(result.outputs) > 1 else None
    metrics = classification_metrics(result.labels, probs, classes, top_pairs)
    metrics["prediction_diversity"] = prediction_diversity(
        result.labels, probs.argmax(axis=1), classes, spread
    )
    keys = content_keys(data_dir, result.ids)
    scored = Scored(backbone, classes, image_size, metrics, probs, result.labels, result.ids, keys)
    scored.features = result.outputs[1] if len(result.outputs) > 1 else None
    reason = guard(metrics, scored.predictions(), policy, not_finite)
    if reason:
        log.warning("%s is flagged as degenerate: %s", backbone, reason)
    metrics["degenerate"] = reason is not None
    metrics["degenerate_reason"] = reason
    return scored
