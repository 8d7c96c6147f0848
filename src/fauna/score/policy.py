"""The champion policy: who may be champion, and when a challenger replaces one, on evidence.

One rule for compare (the best backbone of a run, `choose`) and publish (a run's champion
against the dataset's, `challenge`), set by the `compare` config section:

- every model's champion metric gets a bootstrap confidence interval on its test split
  (`interval`);
- a model is eligible only if it beats the no-skill baselines, chance (a uniform guess)
  and the majority class (the class shares answered for every image), with
  `eligibility_confidence` (one-sided; `skill_shortfall`);
- a model is better than another only if a paired bootstrap of the metric difference on
  the same test images (matched by content hash) puts it ahead by more than `min_gain`
  with `confidence` (one-sided; `compare_paired`); otherwise the two cannot be told apart;
- among backbones that cannot be told apart from the best, a stated tie-break decides:
  the higher validation score, then the smaller model.

Everything is seeded: the same predictions give the same decision. docs/report.md ("How
the champion is decided") says the same in words, with the numbers of the smoke run.
Only NumPy is imported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fauna.errors import FaunaError
from fauna.score.metrics import chance_value, metric_spec, prior_value, score

# Per-image true labels and predicted probabilities of one model on its test split
# (evaluate's output), and the folder of compare's output holding each backbone's
# (<backbone>.npz), which publish pairs with the champion's.
PREDICTIONS = "predictions.npz"
PREDICTIONS_DIR = "predictions"


class PolicyError(FaunaError):
    """Two models' predictions cannot be compared (one clear line)."""


@dataclass
class Predictions:
    """What a model answered for each test image, keyed by the image's content hash."""

    keys: np.ndarray  # str: image sha256 (or id where no hash is known)
    y_true: np.ndarray  # int: true label index
    probs: np.ndarray  # float: (images, classes)

    @property
    def n(self) -> int:
        return len(self.y_true)

    @property
    def num_classes(self) -> int:
        return int(self.probs.shape[1])

    def save(self, path: Path) -> None:
        np.savez_compressed(path, keys=self.keys.astype(str), y_true=self.y_true, probs=self.probs)

    @classmethod
    def load(cls, path: Path) -> Predictions:
        with np.load(path, allow_pickle=False) as f:
            return cls(f["keys"], f["y_true"].astype(np.int64), f["probs"].astype(np.float64))

    def value(self, metric: str) -> float | None:
        return score(metric, self.y_true, self.probs)


def paired(a: Predictions, b: Predictions) -> tuple[Predictions, Predictions]:
    """Both models' answers on the images both were tested on, in one order."""
    common, ia, ib = np.intersect1d(a.keys, b.keys, assume_unique=False, return_indices=True)
    if len(common) == 0:
        raise PolicyError("the two models were tested on no common image: nothing to compare")
    if a.num_classes != b.num_classes or not np.array_equal(a.y_true[ia], b.y_true[ib]):
        raise PolicyError("the two models' test images carry different labels: not one dataset")
    return (
        Predictions(common, a.y_true[ia], a.probs[ia]),
        Predictions(common, b.y_true[ib], b.probs[ib]),
    )


# --------------------------------------------------------------------- intervals


def _resamples(n: int, settings: Any) -> np.ndarray:
    """Bootstrap index sets, seeded: (resamples, n)."""
    rng = np.random.default_rng(settings.seed)
    return rng.integers(0, n, size=(settings.bootstrap_resamples, n))


def _boot(pred: Predictions, metric: str, idx: np.ndarray) -> np.ndarray:
    values = [score(metric, pred.y_true[i], pred.probs[i]) for i in idx]
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


@dataclass
class Interval:
    value: float
    low: float
    high: float
    confidence: float

    def to_dict(self) -> dict[str, float]:
        return {"low": self.low, "high": self.high, "confidence": self.confidence}


def proportion_bounds(k: int, n: int, tail: float) -> tuple[float, float]:
    """Clopper-Pearson (exact binomial) bounds of k successes in n trials, each with `tail`
    probability outside. The one interval of a proportion: the policy decides with it and
    the report shows it (fauna.report.uncertainty); sound at 0, n and small n."""
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    k = min(max(k, 0), n)
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def exact_bounds(pred: Predictions, tail: float) -> tuple[float, float]:
    """Clopper-Pearson bounds of top-1 accuracy, each with `tail` probability outside."""
    k = int(np.sum(pred.probs.argmax(axis=1) == pred.y_true))
    return proportion_bounds(k, pred.n, tail)


def _bounds(pred: Predictions, metric: str, settings: Any, tail: float) -> tuple[float, float]:
    """Lower and upper bounds, each with `tail` probability beyond it.

    Exact binomial (Clopper-Pearson) for top-1 accuracy, a percentile bootstrap over the
    test images for every other metric (a perfect score gets a zero-width bootstrap
    interval: the resampled images are all right too).
    """
    if metric_spec(metric).key == "top1":
        return exact_bounds(pred, tail)
    boot = _boot(pred, metric, _resamples(pred.n, settings))
    boot = boot[np.isfinite(boot)]
    if not len(boot):
        value = float(pred.value(metric) or 0.0)
        return value, value
    low, high = np.quantile(boot, [tail, 1 - tail])
    return float(low), float(high)


def interval(pred: Predictions, metric: str, settings: Any) -> Interval | None:
    """The metric with its two-sided interval at `confidence`."""
    value = pred.value(metric)
    if value is None:
        return None
    low, high = _bounds(pred, metric, settings, (1 - settings.confidence) / 2)
    return Interval(value, low, high, settings.confidence)


@dataclass
class Baseline:
    chance: float  # the metric of a uniform random guess
    majority: float  # the metric of answering the class shares (the majority class) always
    value: float  # the better of the two: what a model must beat
    majority_rate: float  # the largest class's share of the test images


def baseline(pred: Predictions, metric: str) -> Baseline:
    spec = metric_spec(metric)
    chance = chance_value(metric, pred.num_classes)
    majority = prior_value(metric, pred.y_true, pred.num_classes)
    majority = chance if majority is None else majority
    counts = np.bincount(pred.y_true, minlength=pred.num_classes)
    best = majority if spec.better(majority, chance) else chance
    return Baseline(chance, majority, best, float(counts.max() / max(1, pred.n)))


def skill_shortfall(pred: Predictions, metric: str, settings: Any) -> str | None:
    """Why the model is not above the no-skill baselines with confidence; None when it is."""
    spec = metric_spec(metric)
    base = baseline(pred, metric)
    value = pred.value(metric)
    conf = settings.eligibility_confidence
    if value is None:
        return f"no better than chance ({spec.label} is undefined on this test split)"
    low, high = _bounds(pred, metric, settings, 1 - conf)
    bound = low if spec.higher_is_better else high
    if spec.better(bound, base.value):
        return None
    side = "lower" if spec.higher_is_better else "upper"
    return (
        f"no better than chance ({spec.label} {value:.3f}, {conf:.0%} {side} bound "
        f"{bound:.3f}, vs {base.value:.3f} for no skill: chance {base.chance:.3f}, "
        f"majority class {base.majority:.3f}; {pred.n} test images)"
    )


def above_no_skill(pred: Predictions, metric: str, settings: Any) -> str:
    """The eligibility evidence in words (for a model that passed `skill_shortfall`)."""
    spec = metric_spec(metric)
    base = baseline(pred, metric)
    return (
        f"{spec.label} {pred.value(metric):.3f} is above no skill ({base.value:.3f}) with "
        f"{settings.eligibility_confidence:.0%} confidence on {pred.n} test images"
    )


def resolution(n: int, settings: Any) -> float:
    """The smallest difference (as a share of images) that `n` test images can separate.

    At best, when the better model is right on every image where the two disagree: a
    sign test needs k such images with 0.5^k < 1 - confidence, so k / n.
    """
    k = math.ceil(math.log(1 / (1 - settings.confidence), 2))
    return k / max(1, n)


def resolution_sentence(n: int, settings: Any) -> str:
    points = 100 * resolution(n, settings)
    return f"{n} test images can separate differences of about {points:.0f} points"


# ---------------------------------------------------------------- paired comparison


@dataclass
class Comparison:
    gain: float  # how much better a is than b (metric units; positive: a better)
    low: float  # one-sided lower bound of the gain at `confidence`
    spread: float  # half-width of the two-sided interval of the gain at `confidence`
    n: int
    disagree: int  # images where the two predict different classes
    confidence: float
    min_gain: float

    @property
    def decisive(self) -> bool:
        """a is better than b by more than min_gain, with the configured confidence."""
        return self.low > self.min_gain

    def sentence(self, versus: str) -> str:
        word = "better" if self.gain >= 0 else "worse"
        return (
            f"{word} than {versus} by {abs(self.gain):.3f} ± {self.spread:.3f} "
            f"on {self.n} test images"
        )


def compare_paired(a: Predictions, b: Predictions, metric: str, settings: Any) -> Comparison:
    """A paired bootstrap of metric(a) - metric(b) on the images both were tested on."""
    spec = metric_spec(metric)
    a, b = paired(a, b)
    va, vb = a.value(metric), b.value(metric)
    if va is None or vb is None:
        raise PolicyError(f"{spec.label} is undefined on the common test images")
    idx = _resamples(a.n, settings)
    boot_a, boot_b = _boot(a, metric, idx), _boot(b, metric, idx)
    gains = np.array([spec.gain(x, y) for x, y in zip(boot_a, boot_b, strict=True)])
    gains = gains[np.isfinite(gains)]
    conf = settings.confidence
    low = float(np.quantile(gains, 1 - conf)) if len(gains) else 0.0
    lo2, hi2 = np.quantile(gains, [(1 - conf) / 2, (1 + conf) / 2]) if len(gains) else (0, 0)
    disagree = int(np.sum(a.probs.argmax(axis=1) != b.probs.argmax(axis=1)))
    return Comparison(
        spec.gain(va, vb), low, float(hi2 - lo2) / 2, a.n, disagree, conf, settings.min_gain
    )


def challenge(
    candidate: Predictions, champion: Predictions, metric: str, settings: Any
) -> tuple[bool, str, Comparison]:
    """Whether the candidate replaces the champion, and the one-line evidence."""
    c = compare_paired(candidate, champion, metric, settings)
    label = metric_spec(metric).label
    threshold = f" by more than {c.min_gain:g}" if c.min_gain > 0 else ""
    if c.decisive:
        reason = f"{label} {c.sentence('the champion')}: better{threshold} with {c.confidence:.0%}"
        return True, reason + " confidence", c
    if c.gain <= 0:
        return False, f"does not beat the champion: {label} {c.sentence('the champion')}", c
    reason = (
        f"{label} {c.sentence('the champion')} — not enough evidence "
        f"(better{threshold} with {c.confidence:.0%} confidence needed; "
        f"{resolution_sentence(c.n, settings)})"
    )
    return False, reason, c


# ----------------------------------------------------------- choosing in one run


@dataclass
class Entrant:
    """One backbone of a run as the choice sees it."""

    backbone: str
    predictions: Predictions | None
    flagged: str | None = None  # why it is degenerate (evaluate's guard), if it is
    validation: float | None = None  # its validation score (higher is better)
    params: int | None = None


@dataclass
class Choice:
    champion: str | None
    value: float | None
    evidence: str
    excluded: dict[str, str]  # backbone -> why it may not be champion


def _tie_break(tied: list[Entrant]) -> Entrant:
    """The higher validation score, then the smaller model, then the first listed."""
    order = {e.backbone: i for i, e in enumerate(tied)}

    def key(e: Entrant) -> tuple[float, float, int]:
        val = -e.validation if e.validation is not None else math.inf
        size = e.params if e.params is not None else math.inf
        return (val, size, order[e.backbone])

    return min(tied, key=key)


def choose(entrants: list[Entrant], metric: str, settings: Any) -> Choice:
    """The champion of one run: eligible, and better than the rest on evidence or tie-broken."""
    spec = metric_spec(metric)
    excluded: dict[str, str] = {}
    eligible: list[tuple[float, Entrant]] = []
    for e in entrants:
        if e.flagged:
            excluded[e.backbone] = e.flagged
        elif e.predictions is None:
            excluded[e.backbone] = f"no per-image predictions ({PREDICTIONS}): re-run evaluate"
        else:
            value = e.predictions.value(metric)
            reason = skill_shortfall(e.predictions, metric, settings)
            if value is None or reason:
                excluded[e.backbone] = reason or f"no {spec.label}"
            else:
                eligible.append((value, e))
    if not eligible:
        return Choice(None, None, "no model is eligible: " + _reasons(excluded), excluded)
    eligible.sort(key=lambda ve: -ve[0] if spec.higher_is_better else ve[0])
    best_value, best = eligible[0]
    if len(eligible) == 1:
        return Choice(best.backbone, best_value, _alone(best, metric, settings), excluded)
    return _among(eligible, metric, settings, excluded)


def _reasons(excluded: dict[str, str]) -> str:
    return "; ".join(f"{b}: {r}" for b, r in excluded.items())


def _alone(e: Entrant, metric: str, settings: Any) -> str:
    assert e.predictions is not None
    evidence = above_no_skill(e.predictions, metric, settings)
    return f"{e.backbone} is the only eligible model: {evidence}"


def _among(
    eligible: list[tuple[float, Entrant]], metric: str, settings: Any, excluded: dict[str, str]
) -> Choice:
    """The best by value if it beats every other on evidence, else the tie-break's pick."""
    spec = metric_spec(metric)
    best = eligible[0][1]
    tied, runner = [best], None
    for _, other in eligible[1:]:
        assert best.predictions is not None and other.predictions is not None
        c = compare_paired(best.predictions, other.predictions, metric, settings)
        runner = runner or (other, c)
        if not c.decisive:
            tied.append(other)
    other, c = runner  # type: ignore[misc]
    if len(tied) == 1:
        evidence = (
            f"{best.backbone} is ahead of the next best: {spec.label} "
            f"{c.sentence(other.backbone)}, with {c.confidence:.0%} confidence"
        )
        return Choice(best.backbone, eligible[0][0], evidence, excluded)
    pick = _tie_break(tied)
    value = next(v for v, e in eligible if e is pick)
    names = ", ".join(e.backbone for e in tied)
    evidence = (
        f"{names} cannot be told apart ({best.backbone}: {spec.label} "
        f"{c.sentence(other.backbone)}, not enough evidence at {c.confidence:.0%}; "
        f"{resolution_sentence(c.n, settings)}); tie-break: the higher validation score, "
        f"then the smaller model: {pick.backbone}"
    )
    return Choice(pick.backbone, value, evidence, excluded)
