"""Publish and champion/challenger on real (tiny) models, real evaluations and the embedded S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_evaluate import make_dataset_dir, make_model_dir

from fauna import storage
from fauna.config import Config
from fauna.steps.compare import compare_backbones
from fauna.steps.evaluate import evaluate_model
from fauna.steps.predict import champion_model_uri
from fauna.steps.publish import (
    CHAMPION_KEY,
    publish_run,
    signature_of_test_split,
)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("data"), seed=0)


def _knock_out(strong: Path, out: Path, name: str, classes_off: list[int]) -> Path:
    """A copy of `strong` that can never predict `classes_off`: strictly worse, by construction."""
    import keras

    shutil.copytree(strong, out)
    model = keras.saving.load_model(out / "model.keras", compile=False)
    layer = model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    bias[classes_off] = -1e4
    layer.set_weights([kernel, bias])
    model.save(out / "model.keras")
    info = json.loads((out / "train_info.json").read_text())
    (out / "train_info.json").write_text(json.dumps({**info, "backbone": name}))
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory, data) -> dict[str, Path]:
    """weak < medium < strong: the two weaker ones are the strong one with classes knocked out.

    medium loses the class strong predicts best; weak can only ever predict one class.
    """
    import csv

    from fauna.config import EvaluateConfig

    root = tmp_path_factory.mktemp("models")
    strong = make_model_dir(root / "strong", data, "strong", epochs=6, lr=3e-2)
    metrics = evaluate_model(strong, data, root / "strong-eval", EvaluateConfig())
    assert metrics["macro_f1"] >= 0.6, "the tiny model did not learn: the test cannot rank models"
    with (root / "strong-eval" / "per_class.csv").open() as fh:
        f1 = [float(row["f1"]) for row in csv.DictReader(fh)]
    best = max(range(len(f1)), key=f1.__getitem__)
    return {
        "strong": strong,
        "medium": _knock_out(strong, root / "medium", "medium", [best]),
        "weak": _knock_out(strong, root / "weak", "weak", [i for i in range(len(f1)) if i != best]),
    }


def _report(tmp: Path, model: Path, data: Path, cfg: Config) -> tuple[Path, float]:
    """evaluate + compare for one model, as the pipeline does; returns (report dir, macro-F1)."""
    metrics = evaluate_model(model, data, tmp / "eval", cfg.evaluate)
    compare_backbones([model], [tmp / "eval"], [], tmp / "report", cfg)
    return tmp / "report", metrics["macro_f1"]


def _cfg(bucket: str) -> Config:
    return Config().merged({"pipeline": {"bucket": bucket}})


def _pointer(bucket: str) -> dict:
    return json.loads(storage.read_text(f"s3://{bucket}/{CHAMPION_KEY}"))


def test_worse_model_does_not_move_the_pointer_better_one_does(s3, data, models, tmp_path):
    cfg = _cfg(s3)
    scores = {}
    results = {}
    for run_id, name in (("run-1", "medium"), ("run-2", "weak"), ("run-3", "strong")):
        report, scores[name] = _report(tmp_path / run_id, models[name], data, cfg)
        results[run_id] = publish_run(report, [models[name]], data, run_id, cfg)
    assert scores["weak"] < scores["medium"] < scores["strong"]

    assert results["run-1"].promotion.promoted
    assert "no champion yet" in results["run-1"].promotion.reason
    assert not results["run-2"].promotion.promoted
    assert "does not beat" in results["run-2"].promotion.reason
    assert results["run-3"].promotion.promoted

    pointer = _pointer(s3)
    assert pointer["run_id"] == "run-3" and pointer["backbone"] == "strong"
    assert pointer["metric"] == "macro_f1" and pointer["value"] == pytest.approx(scores["strong"])
    assert pointer["model_uri"] == f"s3://{s3}/runs/run-3/models/strong"
    assert pointer["test_split_signature"] == signature_of_test_split(data)
    assert champion_model_uri(cfg) == pointer["model_uri"]  # what `predict --model champion` uses
    history = [k for k, _ in storage.list_keys(f"s3://{s3}/models/champion/history")]
    assert len(history) == 1 and history[0].endswith("-run-1.json")  # run-2 never got there

    # Everything a run needs is in the bucket, and the report says what happened.
    for run_id, name in (("run-2", "weak"), ("run-3", "strong")):
        base = f"s3://{s3}/runs/{run_id}"
        for key in (
            "report/report.html",
            "report/report.md",
            "report/metrics.json",
            f"models/{name}/model.keras",
            f"models/{name}/classes.json",
            f"models/{name}/preprocess.json",
            "publish.json",
        ):
            assert storage.exists(f"{base}/{key}"), key
    assert "not promoted" in storage.read_text(f"s3://{s3}/runs/run-2/report/report.md")
    assert "promoted to champion" in storage.read_text(f"s3://{s3}/runs/run-3/report/report.html")


def test_new_test_split_re_evaluates_the_champion(s3, data, models, tmp_path):
    """With new data the champion is re-scored on the new test split before comparing."""
    cfg = _cfg(s3)
    report, _ = _report(tmp_path / "a", models["strong"], data, cfg)
    publish_run(report, [models["strong"]], data, "old", cfg)

    new_data = make_dataset_dir(tmp_path / "new-data", seed=1)
    assert signature_of_test_split(new_data) != signature_of_test_split(data)
    report, _ = _report(tmp_path / "b", models["weak"], new_data, cfg)
    result = publish_run(report, [models["weak"]], new_data, "new", cfg)
    assert not result.promotion.promoted
    assert "re-evaluating the champion on this run's test split" in result.promotion.reason
    assert result.promotion.champion_value > result.promotion.candidate_value
    assert _pointer(s3)["run_id"] == "old"


def test_publish_to_missing_bucket_is_clear(s3, data, models, tmp_path):
    report, _ = _report(tmp_path, models["weak"], data, _cfg(s3))
    with pytest.raises(storage.StorageError, match="bucket does not exist"):
        publish_run(report, [models["weak"]], data, "r", _cfg("no-such-bucket"))
