"""The test metrics every step and report speaks of, and which of them may crown a champion."""

from __future__ import annotations

from typing import Any

# The scalar test metrics of one evaluation (metrics.json), in the order reports show them.
METRIC_KEYS = ("top1", "top3", "macro_f1", "weighted_f1", "roc_auc", "loss")
# What `compare.champion_metric` may be: higher is better for each (neg_loss = -loss).
CHAMPION_METRICS = ("macro_f1", "top1", "top3", "weighted_f1", "roc_auc", "neg_loss")
METRIC_LABELS = {
    "top1": "top-1 accuracy",
    "top3": "top-3 accuracy",
    "macro_f1": "macro-F1",
    "weighted_f1": "weighted-F1",
    "roc_auc": "ROC-AUC",
    "neg_loss": "lowest test loss",
    "loss": "test loss",
}


def champion_value(metrics: dict[str, Any], metric: str) -> float | None:
    """The value that ranks models by `metric` (higher is better), None when not measured."""
    if metric == "neg_loss":
        return None if metrics.get("loss") is None else -float(metrics["loss"])
    value = metrics.get(metric)
    return None if value is None else float(value)
