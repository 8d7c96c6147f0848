"""The champion policy on constructed predictions (NumPy only, no model, no TensorFlow).

A random guess is refused, a clear winner is promoted, a near-tie is held; the same rule
in compare's choice (`choose`) and publish's decision (`decide`). Last, evaluate's
learned-nothing guard, and one end-to-end case with a real model trained on shuffled
labels (marked `training`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_compare import separable_share

from fauna.config import CompareConfig, Config, ConfigError
from fauna.score.metrics import (
    CHAMPION_METRICS,
    DEPRECATED_ALIASES,
    METRIC_KEYS,
    metric_spec,
    score,
)
from fauna.score.policy import (
    Entrant,
    PolicyError,
    Predictions,
    challenge,
    choose,
    interval,
    resolution,
    skill_shortfall,
)

POLICY = CompareConfig()
# What 108 test images can separate at the policy's confidence, in points.
SEPARABLE_108 = 100 * separable_share(108, POLICY.confidence)
CLASSES4 = ["antelope", "german+shepherd", "killer+whale", "mole"]


def model(n: int, k: int, right: np.ndarray, seed: int, keys: np.ndarray | None = None):
    """Answers on n images of k classes (balanced): right where `right`, a guess elsewhere."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    guess = rng.integers(0, k, n)
    pred = np.where(right, y, guess)
    probs = np.full((n, k), 0.2 / k)
    probs[np.arange(n), pred] += 0.8
    keys = np.array([f"{i:064x}" for i in range(n)]) if keys is None else keys
    return Predictions(keys, y, probs)


def smoke_like(seed: int, accuracy: float = 0.95, n: int = 108, k: int = 30):
    """The smoke run's test split: 30 classes, ~108 images; a model right ~95% of the time."""
    rng = np.random.default_rng(100 + seed)
    return model(n, k, rng.random(n) < accuracy, seed)


# ------------------------------------------------------------------ metric spec


def test_metric_spec_is_the_one_table() -> None:
    assert len(set(METRIC_KEYS)) == len(METRIC_KEYS)
    assert {"top1", "top3", "macro_f1", "loss"} <= set(METRIC_KEYS)  # the paper's, at least
    assert metric_spec("loss").higher_is_better is False and metric_spec("loss").label
    assert metric_spec("neg_loss") is metric_spec("loss")  # the deprecated alias
    assert metric_spec("macro_f1").format(0.123456) == "0.1235"
    crowning = set(CHAMPION_METRICS)
    assert {"top1", "macro_f1", "loss", "neg_loss"} <= crowning <= {*METRIC_KEYS, "neg_loss"}
    assert metric_spec("loss").better(0.2, 0.3) and metric_spec("top1").better(0.3, 0.2)
    with pytest.raises(KeyError, match="unknown metric 'f2'"):
        metric_spec("f2")


def test_per_image_scores_match_evaluation() -> None:
    """The policy's resampled metrics are the evaluate step's, on the full test split."""
    from fauna.score.evaluation import classification_metrics

    classes = ["a", "b", "c", "d", "e"]
    p = smoke_like(1, accuracy=0.6, n=200, k=5)
    full = classification_metrics(p.y_true, p.probs, classes, 3)
    for key in (m for m in CHAMPION_METRICS if m not in DEPRECATED_ALIASES):
        assert score(key, p.y_true, p.probs) == pytest.approx(full[key]), key


def test_a_metric_without_its_per_image_computation_fails_loudly(monkeypatch) -> None:
    """A metric added to the spec that may crown needs score() and chance_value(): until
    they have it, the policy says so instead of scoring it as a loss (as it once did)."""
    from fauna.score import metrics
    from fauna.score.metrics import MetricSpec, chance_value

    monkeypatch.setitem(metrics._BY_KEY, "brier", MetricSpec("brier", "Brier", False, ".3f", True))
    p = smoke_like(1, accuracy=0.6, n=50, k=5)
    with pytest.raises(KeyError, match="no per-image computation of 'brier': add it to score"):
        score("brier", p.y_true, p.probs)
    with pytest.raises(KeyError, match="no chance level of 'brier': add it to chance_value"):
        chance_value("brier", 5)


def test_config_section_checks_and_the_alias() -> None:
    assert Config().merged(
        {"compare": {"champion_metric": "neg_loss"}}
    ).compare.champion_metric == ("loss")
    for bad, match in (
        ({"confidence": 1.0}, "compare.confidence: Input should be less than 1"),
        (
            {"eligibility_confidence": 0.3},
            "compare.eligibility_confidence: Input should be greater",
        ),
        ({"min_gain": -0.1}, "compare.min_gain: Input should be greater than or equal to 0"),
        (
            {"bootstrap_resamples": 10},
            "compare.bootstrap_resamples: Input should be greater than or equal to 100",
        ),
    ):
        with pytest.raises(ConfigError, match=match):
            Config().merged({"compare": bad})


# --------------------------------------------------------------- eligibility


def test_a_random_guess_is_refused_and_a_learner_is_not() -> None:
    """No skill almost never passes at 99%; the smoke run's models pass by far."""
    passed = sum(
        skill_shortfall(model(108, 30, np.zeros(108, bool), s), "macro_f1", POLICY) is None
        for s in range(40)
    )
    assert passed == 0
    reason = skill_shortfall(model(30, 4, np.zeros(30, bool), 0), "top1", POLICY)
    assert reason is not None and reason.startswith("no better than chance (top-1 accuracy")
    assert "chance 0.250" in reason and "30 test images" in reason
    for seed in range(5):
        assert skill_shortfall(smoke_like(seed), "macro_f1", POLICY) is None
        assert skill_shortfall(smoke_like(seed), "top1", POLICY) is None


def test_the_majority_class_is_a_baseline_too() -> None:
    """On 80% one class, answering that class is 0.8 top-1: 0.82 is not evidence of skill."""
    n = 100
    y = np.array([0] * 80 + [1] * 10 + [2] * 10)
    probs = np.full((n, 3), 0.1)
    probs[:, 0] = 0.8
    probs[80:82] = [[0.1, 0.8, 0.1], [0.1, 0.1, 0.8]]  # two more right answers
    probs[80, :] = [0.1, 0.8, 0.1]
    probs[90, :] = [0.1, 0.1, 0.8]
    p = Predictions(np.array([str(i) for i in range(n)]), y, probs)
    assert p.value("top1") == pytest.approx(0.82)
    reason = skill_shortfall(p, "top1", POLICY)
    assert reason is not None and "majority class 0.800" in reason


def test_intervals_narrow_with_more_images() -> None:
    small = interval(smoke_like(0, 0.8, n=30), "top1", POLICY)
    large = interval(smoke_like(0, 0.8, n=1000), "top1", POLICY)
    assert small is not None and large is not None
    assert small.low < small.value < small.high and large.low < large.value < large.high
    assert (large.high - large.low) < (small.high - small.low) / 3
    f1 = interval(smoke_like(0, 0.8, n=200), "macro_f1", POLICY)
    assert f1 is not None and f1.low < f1.value < f1.high and f1.confidence == POLICY.confidence
    assert resolution(30, POLICY) == pytest.approx(separable_share(30, POLICY.confidence))


def test_the_report_shows_the_top1_interval_the_policy_decides_with() -> None:
    """One interval of a proportion: the report's top-1 range is the policy's exact bounds."""
    from fauna.report.uncertainty import interval as report_interval

    for n, accuracy, seed in [(30, 0.8, 0), (108, 0.95, 1), (12, 1.0, 2)]:
        pred = smoke_like(seed, accuracy, n=n)
        decided = interval(pred, "top1", POLICY)
        assert decided is not None
        row = {"backbone": "b", "top1": decided.value, "n_test": n, "interval": None}
        data = {"metric": "macro_f1", "dataset": {"num_classes": 30}, "backbones": [row]}
        shown = report_interval(row, "top1", data)
        # The report's interval is at the configured confidence without being told it.
        assert shown == {"low": decided.low, "high": decided.high, "confidence": POLICY.confidence}


# ------------------------------------------------------------- challenger vs champion


def test_a_clear_winner_is_promoted_and_a_near_tie_held() -> None:
    rng = np.random.default_rng(7)
    n = 108
    base = rng.random(n) < 0.6
    champion = model(n, 30, base, 1)
    better = model(n, 30, base | (rng.random(n) < 0.8), 1)  # right wherever base is, and more
    promoted, reason, c = challenge(better, champion, "top1", POLICY)
    assert promoted and c.low > 0
    assert reason.startswith("top-1 accuracy better than the champion by ")
    assert reason.endswith(f"on 108 test images: better with {POLICY.confidence:.0%} confidence")

    nearly = base.copy()
    nearly[np.flatnonzero(~base)[:1]] = True  # one image more: 0.9 points
    promoted, reason, c = challenge(model(n, 30, nearly, 1), champion, "top1", POLICY)
    assert not promoted and c.gain == pytest.approx(1 / n, abs=0.002)
    assert "better than the champion by 0.009 ± " in reason
    assert "on 108 test images — not enough evidence" in reason
    assert f"can separate differences of about {SEPARABLE_108:.0f} points" in reason

    promoted, reason, _ = challenge(champion, better, "top1", POLICY)
    assert not promoted and reason.startswith("does not beat the champion: top-1 accuracy worse")


def test_min_gain_and_confidence_are_settings() -> None:
    rng = np.random.default_rng(3)
    base = rng.random(200) < 0.6
    champion = model(200, 10, base, 2)
    better = model(200, 10, base | (rng.random(200) < 0.25), 2)  # ~10 points better
    assert challenge(better, champion, "top1", POLICY)[0]
    demanding = CompareConfig(min_gain=0.2)
    promoted, reason, _ = challenge(better, champion, "top1", demanding)
    needed = f"better by more than 0.2 with {demanding.confidence:.0%} confidence needed"
    assert not promoted and needed in reason


def test_identical_models_are_never_better() -> None:
    p = smoke_like(0)
    promoted, reason, c = challenge(p, p, "macro_f1", POLICY)
    assert not promoted and c.gain == 0 and "does not beat the champion" in reason


def test_models_are_paired_on_image_content_not_order() -> None:
    a = smoke_like(0)
    order = np.random.default_rng(0).permutation(a.n)
    shuffled = Predictions(a.keys[order], a.y_true[order], a.probs[order])
    c = challenge(shuffled, a, "macro_f1", POLICY)[2]
    assert c.gain == 0 and c.spread == 0 and c.disagree == 0
    other = Predictions(np.array([f"x{i}" for i in range(a.n)]), a.y_true, a.probs)
    with pytest.raises(PolicyError, match="no common image"):
        challenge(other, a, "macro_f1", POLICY)


def test_lower_is_better_for_loss() -> None:
    a = smoke_like(0)
    sharper = Predictions(a.keys, a.y_true, a.probs**4 / (a.probs**4).sum(axis=1, keepdims=True))
    better = sharper if sharper.value("loss") < a.value("loss") else a
    worse = a if better is sharper else sharper
    assert challenge(better, worse, "loss", POLICY)[0]
    assert not challenge(worse, better, "loss", POLICY)[0]


# ------------------------------------------------------------ choosing in one run


def test_choose_names_the_winner_with_its_evidence() -> None:
    rng = np.random.default_rng(5)
    base = rng.random(108) < 0.5
    entrants = [
        Entrant("weak", model(108, 30, base, 1)),
        Entrant("strong", model(108, 30, base | (rng.random(108) < 0.9), 1)),
        Entrant("guess", model(108, 30, np.zeros(108, bool), 2)),
        Entrant("flat", smoke_like(0), flagged="it predicts one class"),
    ]
    choice = choose(entrants, "macro_f1", POLICY)
    assert choice.champion == "strong"
    assert choice.evidence.startswith("strong is ahead of the next best: macro-F1 better than weak")
    assert choice.excluded["flat"] == "it predicts one class"
    assert choice.excluded["guess"].startswith("no better than chance")


def test_a_tie_is_said_and_broken_by_validation_then_size() -> None:
    rng = np.random.default_rng(9)
    base = rng.random(108) < 0.9
    a = model(108, 30, base, 1)
    b_right = base.copy()
    b_right[np.flatnonzero(base)[:1]] = False  # one image fewer than a
    b = model(108, 30, b_right, 1)
    choice = choose(
        [
            Entrant("big", a, validation=0.80, params=25_000_000),
            Entrant("small", b, validation=0.85, params=1_000_000),
        ],  # fmt: skip
        "top1",
        POLICY,
    )
    assert choice.champion == "small"  # the higher validation score
    assert choice.evidence.startswith("big, small cannot be told apart")
    assert "tie-break: the higher validation score, then the smaller model: small" in (
        choice.evidence
    )
    assert f"can separate differences of about {SEPARABLE_108:.0f} points" in choice.evidence
    same_val = [
        Entrant("big", a, validation=0.8, params=25_000_000),
        Entrant("small", b, validation=0.8, params=1_000_000),
    ]
    assert choose(same_val, "top1", POLICY).champion == "small"  # then the smaller model


def test_nobody_eligible_means_no_champion() -> None:
    guesses = [Entrant(f"g{s}", model(60, 4, np.zeros(60, bool), s)) for s in range(3)]
    choice = choose(guesses + [Entrant("old", None)], "macro_f1", POLICY)
    assert choice.champion is None and set(choice.excluded) == {"g0", "g1", "g2", "old"}
    assert "no per-image predictions" in choice.excluded["old"]


# ------------------------------------------------------------ publish's decision


def _candidate(run_id: str = "r2") -> dict:
    dataset = {"name": "tiny", "key": "tiny-1234"}
    return {"run_id": run_id, "backbone": "b", "metric": "top1", "value": 0.9,
            "model_uri": f"s3://x/runs/{run_id}/models/b", "test_split_signature": "s",
            "dataset": dataset}  # fmt: skip


def test_publish_decides_by_the_same_policy() -> None:
    from fauna.steps.publish import Rescored, decide

    policy = CompareConfig(champion_metric="top1")
    guess = model(30, 4, np.zeros(30, bool), 0)
    first = decide(_candidate(), None, None, policy, guess)
    assert not first.promoted and first.reason.startswith("b is no better than chance")

    good = smoke_like(0, accuracy=0.9, n=30, k=4)
    first = decide(_candidate(), None, None, policy, good)
    assert first.promoted and "the first champion of dataset tiny (tiny-1234)" in first.reason

    current = {**_candidate("r1"), "value": 0.88}
    held = decide(_candidate(), current, lambda p: Rescored(good, None, 0.9, "here"), policy, good)
    assert not held.promoted and "does not beat the champion" in held.reason

    def unreadable(pointer):
        raise OSError("SlowDown")

    refused = decide(_candidate(), current, unreadable, policy, good)
    assert not refused.promoted and "could not be re-evaluated" in refused.reason
    missing = decide(_candidate(), current, unreadable, policy, None)
    assert not missing.promoted and "no per-image predictions" in missing.reason


# ------------------------------------------------------------ evaluate's guard


def test_learned_nothing_guard_on_known_predictions() -> None:
    """Varied answers that ignore the image are flagged as no better than chance."""
    from fauna.score.evaluation import classification_metrics, guard, prediction_diversity

    rng = np.random.default_rng(0)
    y_true = np.arange(120) % 4
    guesses = rng.integers(0, 4, 120)  # diverse: passes the one-class guard
    probs = np.full((120, 4), 0.1)
    probs[np.arange(120), guesses] = 0.7
    metrics = classification_metrics(y_true, probs, CLASSES4, 3)
    metrics["prediction_diversity"] = prediction_diversity(y_true, guesses, CLASSES4)
    keys = np.array([f"{i}" for i in range(120)])
    reason = guard(metrics, Predictions(keys, y_true, probs), CompareConfig(), None)
    assert reason is not None and reason.startswith("no better than chance (macro-F1 ")
    assert "chance 0.250" in reason and "120 test images" in reason

    right = probs.copy()
    right[np.arange(120), y_true] = 0.9  # the same confidence, on the true class
    metrics = classification_metrics(y_true, right, CLASSES4, 3)
    metrics["prediction_diversity"] = prediction_diversity(y_true, y_true, CLASSES4)
    assert guard(metrics, Predictions(keys, y_true, right), CompareConfig(), None) is None


@pytest.mark.training
def test_shuffled_labels_model_is_never_champion(s3: str, tmp_path: Path) -> None:
    """Trained on random labels (no information): flagged, no champion, not published as one.

    The issue's case: such a model used to become its dataset's first champion.
    """
    from test_evaluate import make_dataset_dir, make_model_dir

    from fauna.steps.compare import compare_backbones
    from fauna.steps.evaluate import evaluate_model
    from fauna.steps.publish import publish_run
    from fauna.store import champion
    from fauna.store.champion import DatasetId

    data = make_dataset_dir(tmp_path / "data", seed=3, test_per_class=15, shuffled_labels=True)
    model = make_model_dir(tmp_path / "shuffled", data, "shuffled", epochs=6, lr=3e-2)
    cfg = Config().merged({"pipeline": {"bucket": s3}})
    metrics = evaluate_model(model, data, tmp_path / "eval", cfg.evaluate, cfg.compare)
    assert metrics["degenerate"] is True
    assert "no better than chance (macro-F1" in metrics["degenerate_reason"]
    result = compare_backbones([model], [tmp_path / "eval"], [], tmp_path / "report", cfg)
    assert result["champion"] is None
    assert "no better than chance" in result["flagged"]["shuffled"]
    published = publish_run(tmp_path / "report", [model], data, "r1", tmp_path / "out", cfg)
    assert not published.promotion.promoted
    assert "no better than chance" in published.promotion.reason
    assert champion.read_pointer(s3, DatasetId.from_folder(data).key) is None
