"""The metric spec: every test metric once, with its label, direction, format and role.

Evaluation, the report (its results table: one column per row here, in this order),
compare's choice, publish's decision and the console summaries read labels, directions
and formats from `SPECS` (via `metric_spec`), so a new metric, or one where lower is
better, is one row here plus its computation in
`fauna.score.evaluation.classification_metrics` and, when it may crown a champion, its
per-image computation (`score`, `chance_value`) for the intervals of fauna.score.policy.

Only NumPy is imported here.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# Matches Keras' clipping in categorical cross-entropy, so our loss equals model.evaluate's.
LOSS_EPSILON = 1e-7


@dataclass(frozen=True)
class MetricSpec:
    key: str  # the key in metrics.json
    label: str  # how reports and logs name it
    higher_is_better: bool
    fmt: str  # format spec of a value, e.g. ".4f"
    may_crown: bool  # may be `compare.champion_metric`
    # Its validation counterpart: the Keras history key train logs each epoch (the sweep's
    # objective, the tie-break's score); None where training measures none.
    validation: str | None = None
    # Its name as a column header (tables, console summaries); "" = the label.
    short: str = ""
    # k of a top-k accuracy: a share of the test images (the report shows a percentage and
    # the exact binomial interval, and does not rank it where k >= classes); None otherwise.
    top_k: int | None = None

    @property
    def header(self) -> str:
        return self.short or self.label

    def format(self, value: float | None) -> str:
        return "n/a" if value is None else format(value, self.fmt)

    def better(self, a: float, b: float) -> bool:
        """Whether `a` is strictly better than `b` by this metric."""
        return a > b if self.higher_is_better else a < b

    def gain(self, a: float, b: float) -> float:
        """How much better `a` is than `b` (positive: better), in the metric's units."""
        return a - b if self.higher_is_better else b - a


# The scalar test metrics of one evaluation (metrics.json), in the order reports show them.
SPECS: tuple[MetricSpec, ...] = (
    MetricSpec("top1", "top-1 accuracy", True, ".4f", True, "val_accuracy", "top-1", 1),
    MetricSpec("top3", "top-3 accuracy", True, ".4f", True, "val_top3_accuracy", "top-3", 3),
    MetricSpec("macro_f1", "macro-F1", True, ".4f", True, "val_macro_f1"),
    MetricSpec("weighted_f1", "weighted-F1", True, ".4f", True),
    MetricSpec("roc_auc", "ROC-AUC", True, ".4f", True, "val_auc"),
    MetricSpec("loss", "test loss", False, ".4f", True, "val_loss", "loss"),
)
_BY_KEY = {s.key: s for s in SPECS}
# Old names still accepted in configs: neg_loss (= -loss, higher is better) is now `loss`.
DEPRECATED_ALIASES = {"neg_loss": "loss"}

METRIC_KEYS = tuple(s.key for s in SPECS)
# What `compare.champion_metric` may be (a deprecated alias is accepted and translated).
CHAMPION_METRICS = tuple(s.key for s in SPECS if s.may_crown) + tuple(DEPRECATED_ALIASES)
METRIC_LABELS = {s.key: s.label for s in SPECS}
# Every validation metric train logs that some test metric corresponds to, in SPECS order.
VALIDATION_METRICS = tuple(s.validation for s in SPECS if s.validation)


def canonical(key: str) -> str:
    """The metric's current name (a deprecated alias translated, with a warning)."""
    if key in DEPRECATED_ALIASES:
        new = DEPRECATED_ALIASES[key]
        log.warning("champion metric %r is deprecated: it means %r (lower is better)", key, new)
        return new
    return key


def metric_spec(key: str) -> MetricSpec:
    """The spec of a metric by key (or deprecated alias)."""
    key = DEPRECATED_ALIASES.get(key, key)
    if key not in _BY_KEY:
        raise KeyError(f"unknown metric {key!r}: one of {', '.join(METRIC_KEYS)}")
    return _BY_KEY[key]


def champion_value(metrics: dict[str, Any], metric: str) -> float | None:
    """The metric's value as measured (loss stays a loss), None when not measured."""
    value = metrics.get(metric_spec(metric).key)
    return None if value is None else float(value)


# ------------------------------------------------------------- per-image computation


def _f1(y_true: np.ndarray, y_pred: np.ndarray, k: int, weighted: bool) -> float:
    """Macro-F1 over the classes present in y_true (as evaluation does), or weighted-F1."""
    cm = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)
    tp = np.diag(cm).astype(float)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros(k), where=denom > 0)
    present = support > 0
    if weighted:
        return float((f1 * support).sum() / max(1, support.sum()))
    return float(f1[present].mean()) if present.any() else 0.0


def _auc(y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """One-vs-rest macro ROC-AUC over the classes present (Mann-Whitney, ties averaged)."""
    from scipy.stats import rankdata

    n, k = probs.shape
    aucs = []
    for c in range(k):
        pos = y_true == c
        n_pos = int(pos.sum())
        if n_pos == 0 or n_pos == n:
            continue
        ranks = rankdata(probs[:, c])
        aucs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * (n - n_pos)))
    return float(np.mean(aucs)) if len(aucs) >= 2 else None


def score(key: str, y_true: np.ndarray, probs: np.ndarray) -> float | None:
    """The metric from true label indices and predicted probabilities (any resample)."""
    key = metric_spec(key).key
    y_true = np.asarray(y_true, dtype=np.int64)
    k = probs.shape[1]
    if key == "top1":
        return float(np.mean(probs.argmax(axis=1) == y_true))
    if key == "top3":
        top = np.argsort(-probs, axis=1)[:, : min(3, k)]
        return float(np.mean((top == y_true[:, None]).any(axis=1)))
    if key in ("macro_f1", "weighted_f1"):
        return _f1(y_true, probs.argmax(axis=1), k, weighted=key == "weighted_f1")
    if key == "roc_auc":
        return _auc(y_true, probs)
    if key == "loss":
        p_true = probs[np.arange(len(y_true)), y_true]
        return float(np.mean(-np.log(np.clip(p_true, LOSS_EPSILON, 1.0))))
    raise KeyError(f"no per-image computation of {key!r}: add it to score() in {__name__}")


def chance_value(key: str, num_classes: int) -> float:
    """The metric of a uniform random guess over `num_classes` classes (its expectation)."""
    key = metric_spec(key).key
    k = max(1, num_classes)
    chances = {
        "top1": 1 / k,
        "top3": min(3, k) / k,
        "macro_f1": 1 / k,
        "weighted_f1": 1 / k,
        "roc_auc": 0.5,
        "loss": math.log(k),
    }
    if key not in chances:
        raise KeyError(f"no chance level of {key!r}: add it to chance_value() in {__name__}")
    return chances[key]


def prior_value(key: str, y_true: np.ndarray, num_classes: int) -> float | None:
    """The metric of a model that answers the class shares for every image (the majority)."""
    counts = np.bincount(np.asarray(y_true, dtype=np.int64), minlength=num_classes)
    shares = counts / max(1, counts.sum())
    probs = np.tile(shares, (len(y_true), 1))
    return score(key, y_true, probs)
