"""How sure the report's numbers are: no-skill baselines, test-set size, intervals.

A score means little without what no skill would score and how many test images it was
measured on (30 images: one image is 3.3 points of top-1). These are read from the report
data where compare's champion policy put them (top level `chance`, `n_test`, `resolution`;
per row `interval`, `n_test`, `chance`, `majority`; the champion's `evidence`) and computed
here where they are missing, so a report made before they existed still shows them:
chance = 1 / classes; majority = the largest class's share of the test images; for a top-k
accuracy (a metric with `top_k` in the metric spec: a proportion of test images) the exact
binomial (Clopper-Pearson) interval, from the champion policy's own function
(`fauna.score.policy.proportion_bounds`), so the report shows the interval the policy decides
with. An interval that does not say its confidence is at the policy's configured one
(`compare.confidence` of fauna.config: `default_confidence`), never a number of its own.
"""

from __future__ import annotations

from typing import Any

from fauna.config import CompareConfig
from fauna.score import metrics
from fauna.score.metrics import DEPRECATED_ALIASES, METRIC_LABELS
from fauna.score.policy import proportion_bounds


def default_confidence() -> float:
    """The champion policy's configured confidence (`compare.confidence`'s default): the
    confidence of an interval where the report data does not say which it was measured at."""
    return CompareConfig().confidence


def _given_confidence(interval: dict[str, Any]) -> float:
    return float(interval.get("confidence", default_confidence()))


def confidence(data: dict[str, Any]) -> float:
    """The confidence compare measured its intervals at (the policy's), else the default."""
    given = [r["interval"] for r in data["backbones"] if r.get("interval")]
    return _given_confidence(given[0]) if given else default_confidence()


def proportion_interval(p: float, n: int, conf: float | None = None) -> tuple[float, float]:
    """The two-sided interval of a share p of n test images (p = right / n, so the count is
    p * n rounded): the policy's exact bounds, at `conf` (None: the default confidence)."""
    conf = default_confidence() if conf is None else conf
    return proportion_bounds(round(p * n), n, (1 - conf) / 2)


def num_classes(data: dict[str, Any]) -> int:
    return int(data["dataset"].get("num_classes") or len(data.get("classes") or []))


def n_test(data: dict[str, Any]) -> int | None:
    """Test images: the policy's number, else the largest any backbone was scored on."""
    counts = [r["n_test"] for r in data["backbones"] if r.get("n_test")]
    return data.get("n_test") or (max(counts) if counts else None)


def chance(data: dict[str, Any]) -> float | None:
    """Top-1 of a uniform guess: 1 / classes."""
    if data.get("chance") is not None:
        return float(data["chance"])
    n = num_classes(data)
    return 1 / n if n else None


def majority(data: dict[str, Any]) -> float | None:
    """Top-1 of always answering the largest test class (a row's, else the test counts)."""
    given = [r["majority"] for r in data["backbones"] if r.get("majority") is not None]
    if given:
        return float(given[0])
    counts = (data.get("data") or {}).get("counts") or {}
    test = [c.get("test", 0) for c in counts.values()]
    return max(test) / sum(test) if test and sum(test) else None


def top_k(key: str) -> int | None:
    """k of a top-k accuracy in the metric spec (a share of the test images), else None."""
    spec = next((s for s in metrics.SPECS if s.key == key), None)
    return None if spec is None else spec.top_k


def top_k_specs() -> list[metrics.MetricSpec]:
    """The spec's top-k accuracies, in its order."""
    return [s for s in metrics.SPECS if s.top_k]


def trivial_top_k(key: str, data: dict[str, Any]) -> bool:
    """top-k with k >= classes is 100% for any model: nothing to rank."""
    k = top_k(key)
    return k is not None and k > 1 and k >= num_classes(data)


def metric_column(metric: str) -> str:
    """The results table's column of the champion metric (a deprecated alias translated)."""
    return DEPRECATED_ALIASES.get(metric, metric)


def interval(row: dict[str, Any], key: str, data: dict[str, Any]) -> dict[str, float] | None:
    """{low, high, confidence} of one score: the policy's measured one for the champion
    metric, the policy's exact bounds for top-1/top-3 (unless trivial), None where the data
    gives none."""
    given = row.get("interval")
    if given and key == metric_column(data["metric"]):
        low, high = float(given["low"]), float(given["high"])
        if data["metric"] == "neg_loss" and high <= 0:  # an interval of minus the loss
            low, high = -high, -low
        return {"low": low, "high": high, "confidence": _given_confidence(given)}
    n = row.get("n_test")
    if top_k(key) and row.get(key) is not None and n and not trivial_top_k(key, data):
        conf = confidence(data)
        low, high = proportion_interval(float(row[key]), int(n), conf)
        return {"low": low, "high": high, "confidence": conf}
    return None


def interval_note(data: dict[str, Any]) -> str:
    """What the bracketed ranges in the results table are."""
    metric = metric_column(data["metric"])
    given = [r["interval"] for r in data["backbones"] if r.get("interval")]
    measured = metric if given else None  # its interval is compare's, not computed here
    exact = [s for s in top_k_specs() if not trivial_top_k(s.key, data) and s.key != measured]
    parts = []
    if exact:
        keys = " and ".join(s.header for s in exact)
        parts.append(
            f"{keys}: {confidence(data):.0%} exact binomial (Clopper-Pearson) "
            f"interval{'s' if len(exact) > 1 else ''} on the test images"
        )
    if given:
        conf = _given_confidence(given[0])
        parts.append(
            f"{METRIC_LABELS.get(metric, metric)}: the {conf:.0%} interval compare measured"
        )
    return "Ranges after a score are its intervals (" + "; ".join(parts) + ")."


def baseline_line(data: dict[str, Any]) -> str:
    """Test-set size and what no skill scores, in one sentence, plus the split's resolution."""
    n, classes, ch, maj = n_test(data), num_classes(data), chance(data), majority(data)
    size = f"{n} test images" if n else "an unknown number of test images"
    text = f"Measured on {size}, {classes} classes. No skill scores: chance (1/{classes}) "
    text += "n/a" if ch is None else f"{100 * ch:.2f}% top-1"
    if classes > 3:
        text += f", {100 * min(1.0, 3 / classes):.2f}% top-3"
    if maj is not None:
        text += f"; always answering the largest class {100 * maj:.2f}% top-1"
    return text + ". " + resolution_line(data, n)


def resolution_line(data: dict[str, Any], n: int | None) -> str:
    """How fine a difference this test split can tell: the policy's words, else top-1's."""
    given = data.get("resolution")
    if isinstance(given, str) and given:
        return given if given.endswith(".") else given + "."
    if isinstance(given, dict) and given.get("text"):
        return str(given["text"])
    if isinstance(given, (int, float)) and not isinstance(given, bool) and n:
        # compare's policy: the smallest share of images by which two models can differ and
        # be told apart at its confidence (at best: the better one right wherever they differ)
        return f"{n} test images can separate differences of about {given:.0%} at best."
    if not n:
        return ""
    conf = confidence(data)
    low, high = proportion_interval(0.5, n, conf)
    return (
        f"One test image is {100 / n:.1f} points of top-1, and a top-1 near 50% is known "
        f"only to within ±{50 * (high - low):.0f} points ({conf:.0%})."
    )
