"""Publish and champion/challenger on real (tiny) models, real evaluations and real S3 calls.

The embedded S3 server (fixture `s3`), and the same server behind the fault-injection
proxy (fixture `faulty_s3`, tests/faults.py) for outages, cut connections and races.
"""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import pytest
from test_evaluate import make_dataset_dir, make_model_dir

from fauna.config import Config
from fauna.steps.compare import compare_backbones
from fauna.steps.evaluate import evaluate_model
from fauna.steps.predict import champion_model_uri
from fauna.steps.publish import publish_run, signature_of_test_split
from fauna.store import champion, storage
from fauna.store.champion import DatasetId

# Test images per class: enough that the champion policy can tell the models apart (on
# 6 per class, a model that never predicts 2 of the 4 classes is no better than chance
# with 99% confidence, rightly). On 30 per class "weaker" (macro-F1 0.333) has a 99% lower
# bound of 0.285 against 0.25 for no skill (0.259 on 15 per class: too thin a margin).
TEST_PER_CLASS = 30


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("data"), seed=0, test_per_class=TEST_PER_CLASS)


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
    """weaker < medium < strong, and flat (one class only, flagged as degenerate).

    Each weaker one is the strong one with its best-predicted classes knocked out.
    """
    import csv

    from fauna.config import EvaluateConfig

    root = tmp_path_factory.mktemp("models")
    strong = make_model_dir(root / "strong", data, "strong", epochs=6, lr=3e-2)
    metrics = evaluate_model(strong, data, root / "strong-eval", EvaluateConfig())
    assert metrics["macro_f1"] >= 0.6, "the tiny model did not learn: the test cannot rank models"
    with (root / "strong-eval" / "per_class.csv").open() as fh:
        f1 = [float(row["f1"]) for row in csv.DictReader(fh)]
    ranked = sorted(range(len(f1)), key=f1.__getitem__, reverse=True)
    return {
        "strong": strong,
        "medium": _knock_out(strong, root / "medium", "medium", ranked[:1]),
        "weaker": _knock_out(strong, root / "weaker", "weaker", ranked[:2]),
        "flat": _knock_out(strong, root / "flat", "flat", ranked[:3]),
    }


@pytest.fixture(scope="module")
def reports(tmp_path_factory, data, models) -> dict[str, tuple[Path, dict]]:
    """evaluate + compare for each model alone, as the pipeline does: (report, its metrics)."""
    root = tmp_path_factory.mktemp("reports")
    cfg = Config()
    found = {}
    for name, model in models.items():
        metrics = evaluate_model(model, data, root / f"eval-{name}", cfg.evaluate)
        compare_backbones([model], [root / f"eval-{name}"], [], root / f"report-{name}", cfg)
        found[name] = (root / f"report-{name}", metrics)
    return found


def _cfg(bucket: str) -> Config:
    return Config().merged({"pipeline": {"bucket": bucket}})


def _key(data: Path) -> str:
    return DatasetId.from_folder(data).key


def _pointer(bucket: str, data: Path) -> dict:
    found = champion.read_pointer(bucket, _key(data))
    assert found is not None
    return found[0]


def _publish(reports, models, name, data, run_id, cfg, tmp_path):
    return publish_run(
        reports[name][0], [models[name]], data, run_id, tmp_path / f"out-{run_id}", cfg
    )


def publish_component(bucket, name, run_id, models, reports, data, tmp: Path, git_sha=""):
    """The KFP publish component's function on `name`'s report and model, its outputs in
    tmp/run_id: (the `champion` Model, the `champion_uri` it wrote, the `published` Dataset)."""
    import dataclasses

    from kfp import dsl

    from fauna.components.publish import publish

    out = tmp / run_id
    out.mkdir()
    champion = dsl.Model(uri=str(out / "champion"))
    published = dsl.Dataset(uri=str(out / "published"))
    publish.python_func(
        champion_metric="macro_f1",
        compare_config={},
        bucket=bucket,
        evaluate_config=dataclasses.asdict(Config().evaluate),
        run_id=run_id,
        report=dsl.Dataset(uri=str(reports[name][0])),
        models=[dsl.Model(uri=str(models[name]))],
        data=dsl.Dataset(uri=str(data)),
        published=published,
        champion=champion,
        champion_uri=str(out / "champion_uri"),
        git_sha=git_sha,
    )
    return champion, (out / "champion_uri").read_text(), published


def _publish_losing_the_pointer_reply(
    faulty_s3, monkeypatch, reports, models, name, data, tmp_path
):
    """Publish `name` as r1 while its pointer write lands but the reply is lost, and the
    store is unreachable after it: the publish fails (transient); the faults are reset.
    Returns the config, for the publishes that follow."""
    from faults import DROP, LOST_REPLY

    from fauna.errors import TransientError

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    cfg = _cfg(faulty_s3.bucket)
    faulty_s3.proxy.only(r"^PUT .*/champion\.json").fail_next(1, LOST_REPLY).then(DROP)
    with pytest.raises(TransientError):
        _publish(reports, models, name, data, "r1", cfg, tmp_path)
    faulty_s3.proxy.reset()
    return cfg


@pytest.mark.training
def test_champion_moves_only_for_a_better_unflagged_model(s3, data, models, reports, tmp_path):
    cfg = _cfg(s3)
    score = {name: m["macro_f1"] for name, (_, m) in reports.items()}
    assert score["weaker"] < score["medium"] < score["strong"]
    assert reports["flat"][1]["degenerate"] and not reports["weaker"][1]["degenerate"]
    results = {}
    for run_id, name in (("run-1", "medium"), ("run-2", "weaker"), ("run-3", "flat"),
                         ("run-4", "strong")):  # fmt: skip
        results[run_id] = _publish(reports, models, name, data, run_id, cfg, tmp_path)

    assert results["run-1"].promotion.promoted
    assert "the first champion of dataset tiny" in results["run-1"].promotion.reason
    assert "is above no skill (0.250) with 99% confidence on 120 test images" in (
        results["run-1"].promotion.reason
    )
    assert not results["run-2"].promotion.promoted
    assert "does not beat the champion: macro-F1 worse than the champion by" in (
        results["run-2"].promotion.reason
    )
    assert not results["run-3"].promotion.promoted
    assert "every model of this run is flagged as degenerate" in results["run-3"].promotion.reason
    assert results["run-4"].promotion.promoted
    # Paired on the same 120 images, from the answers run-1's compare saved.
    assert "better than the champion by" in results["run-4"].promotion.reason
    conf = Config().compare.confidence  # the champion policy's, as configured
    said = f"with {conf:.0%} confidence (on the same test split)"
    assert said in results["run-4"].promotion.reason

    pointer = _pointer(s3, data)
    assert pointer["run_id"] == "run-4" and pointer["backbone"] == "strong"
    assert pointer["metric"] == "macro_f1" and pointer["value"] == pytest.approx(score["strong"])
    assert pointer["model_uri"] == f"s3://{s3}/runs/run-4/models/strong"
    assert pointer["test_split_signature"] == signature_of_test_split(data)
    assert pointer["dataset"]["name"] == "tiny" and pointer["dataset"]["num_classes"] == 4
    assert pointer["previous"]["run_id"] == "run-1"
    assert champion_model_uri(cfg) == pointer["model_uri"]  # what `predict --model champion` uses
    history = champion.read_history(s3, _key(data))
    assert [(h["run_id"], h["moved_pointer"]) for h in history] == [
        ("run-1", True), ("run-2", False), ("run-3", False), ("run-4", True)
    ]  # fmt: skip
    assert history[3]["replaced"]["run_id"] == "run-1"

    # Everything a run needs is in the bucket; the report says what happened, in words.
    for run_id, name in (("run-2", "weaker"), ("run-4", "strong")):
        base = f"s3://{s3}/runs/{run_id}"
        for key in ("report/report.html", "report/report.md", "report/metrics.json",
                    f"models/{name}/model.keras", f"models/{name}/classes.json",
                    f"models/{name}/preprocess.json", "publish.json"):  # fmt: skip
            assert storage.exists(f"{base}/{key}"), key
        saved = json.loads(storage.read_text(f"{base}/publish.json"))
        assert saved == json.loads(json.dumps(results[run_id].to_dict()))
        local = json.loads((tmp_path / f"out-{run_id}" / "publish.json").read_text())
        assert local == saved
    assert "not promoted" in storage.read_text(f"s3://{s3}/runs/run-2/report/report.md")
    assert "promoted to champion" in storage.read_text(f"s3://{s3}/runs/run-4/report/report.html")
    # The input report folder is untouched; the verdict is in the step's own output.
    assert "Publishing:" not in (reports["strong"][0] / "report.md").read_text()
    assert (
        "Publishing: strong was promoted" in (tmp_path / "out-run-4/report/report.md").read_text()
    )


@pytest.mark.training
def test_new_test_split_re_evaluates_the_champion(s3, data, models, reports, tmp_path):
    """With new data the champion is re-scored on the new test split before comparing."""
    cfg = _cfg(s3)
    _publish(reports, models, "strong", data, "old", cfg, tmp_path)

    new_data = make_dataset_dir(tmp_path / "new-data", seed=1, test_per_class=TEST_PER_CLASS)
    assert signature_of_test_split(new_data) != signature_of_test_split(data)
    evaluate_model(models["weaker"], new_data, tmp_path / "eval", cfg.evaluate)
    compare_backbones([models["weaker"]], [tmp_path / "eval"], [], tmp_path / "report", cfg)
    result = publish_run(
        tmp_path / "report", [models["weaker"]], new_data, "new", tmp_path / "out-new", cfg
    )
    assert not result.promotion.promoted
    assert "re-evaluating the champion on this run's test split" in result.promotion.reason
    assert result.promotion.champion_value > result.promotion.candidate_value
    assert _pointer(s3, data)["run_id"] == "old"


@pytest.mark.training
def test_a_champion_s_files_are_never_overwritten(s3, data, models, reports, tmp_path):
    """Another model under the champion's run id is refused; a partial upload is replaced."""
    from fauna.steps.publish import PublishError

    cfg = _cfg(s3)
    partial = f"s3://{s3}/runs/partial/models/strong"
    storage.write_text(f"{partial}/classes.json", "left by a killed publish")
    result = _publish(reports, models, "strong", data, "partial", cfg, tmp_path)
    assert result.promotion.promoted
    assert (
        storage.read_text(f"{partial}/classes.json")
        == (models["strong"] / "classes.json").read_text()
    )
    assert storage.exists(f"{partial}/model.keras")

    other = tmp_path / "strong-again"
    shutil.copytree(models["strong"], other)
    info = json.loads((other / "train_info.json").read_text())
    (other / "train_info.json").write_text(json.dumps({**info, "train_seconds": 99.0}))
    with pytest.raises(PublishError, match="is the champion and holds another model"):
        publish_run(reports["strong"][0], [other], data, "partial", tmp_path / "again", cfg)
    assert _pointer(s3, data)["run_id"] == "partial"


@pytest.mark.training
def test_champion_of_another_dataset_is_never_replaced(s3, data, models, reports, tmp_path):
    cfg = _cfg(s3)
    _publish(reports, models, "weaker", data, "tiny-run", cfg, tmp_path)
    before = _pointer(s3, data)

    other = tmp_path / "other-data"
    shutil.copytree(data, other)
    (other / "source.json").write_text(json.dumps({"source": "test", "name": "bears",
                                                   "synthetic": True}))  # fmt: skip
    evaluate_model(models["strong"], other, tmp_path / "eval", cfg.evaluate)
    compare_backbones([models["strong"]], [tmp_path / "eval"], [], tmp_path / "report", cfg)
    result = publish_run(
        tmp_path / "report", [models["strong"]], other, "bears-run", tmp_path / "out", cfg
    )
    assert result.promotion.promoted and "the first champion of dataset bears" in (
        result.promotion.reason
    )
    assert _pointer(s3, data) == before  # the better model of other data changed nothing here
    assert (
        result.champion_uri
        == champion.pointer_uri(s3, _key(other))
        != champion.pointer_uri(s3, _key(data))
    )

    # `predict --model champion` must now be told which dataset.
    with pytest.raises(champion.ChampionError, match="several datasets have a champion"):
        champion_model_uri(cfg.merged({"data": {"name": "nothing-like-it"}}))
    assert champion_model_uri(cfg, "bears") == result.model_uris["strong"]
    assert champion_model_uri(cfg, _key(data)) == before["model_uri"]
    assert champion_model_uri(cfg.merged({"data": {"name": "tiny"}})) == before["model_uri"]

    # A pointer of another dataset found at this dataset's key is never compared with.
    forged = {**before, "dataset": {**before["dataset"], "key": "bears-00000000"}}
    storage.write_text(champion.pointer_uri(s3, _key(data)), json.dumps(forged))
    refused = _publish(reports, models, "strong", data, "after-forgery", cfg, tmp_path)
    assert not refused.promotion.promoted and "dataset bears-00000000" in refused.promotion.reason


@pytest.mark.training
def test_component_and_cli(s3, data, models, reports, tmp_path, capsys):
    """The KFP component and `fauna publish` write their own output folder."""
    from fauna.cli import main

    _, _, published = publish_component(s3, "medium", "kfp-run", models, reports, data, tmp_path)
    assert published.metadata["promoted"] is True
    saved = json.loads(Path(published.path, "publish.json").read_text())
    assert saved["run_id"] == "kfp-run" and saved["promotion"]["promoted"] is True
    assert "promoted to champion" in Path(published.path, "report/report.html").read_text()

    args = ["publish", "--report", str(reports["strong"][0]), "--models", str(models["strong"])]
    args += ["--data", str(data), "--run-id", "cli-run", "--out", str(tmp_path / "cli")]
    assert main([*args, "--set", f"pipeline.bucket={s3}"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["promotion"]["promoted"] is True
    assert "better than the champion by" in printed["promotion"]["reason"]
    assert _pointer(s3, data)["run_id"] == "cli-run"


@pytest.mark.training
def test_publish_to_missing_bucket_is_clear(s3, data, models, reports, tmp_path):
    with pytest.raises(storage.StorageError, match="bucket does not exist"):
        _publish(reports, models, "weaker", data, "r", _cfg("no-such-bucket"), tmp_path)
    assert not (tmp_path / "out-r").exists()


@pytest.mark.training
def test_report_of_another_dataset_is_refused(s3, data, models, reports, tmp_path):
    from fauna.steps.publish import PublishError

    other = tmp_path / "other-data"
    shutil.copytree(data, other)
    (other / "source.json").write_text(json.dumps({"name": "bears", "synthetic": True}))
    with pytest.raises(PublishError, match="the report is of dataset tiny-.* but --data is bears"):
        _publish(reports, models, "strong", other, "r", _cfg(s3), tmp_path)


# ------------------------------------------------------------------------- faults


def _history(bucket: str, data: Path) -> list[tuple[str, bool]]:
    return [(h["run_id"], h["moved_pointer"]) for h in champion.read_history(bucket, _key(data))]


def _saved(faulty_s3, run_id: str) -> dict:
    return json.loads(storage.read_text(faulty_s3.uri(f"runs/{run_id}/publish.json")))["promotion"]


def _publish_args(reports, models, name, data, run_id, out: Path, bucket: str) -> list[str]:
    args = ["publish", "--report", str(reports[name][0]), "--models", str(models[name])]
    args += ["--data", str(data), "--run-id", run_id, "--out", str(out)]
    return [*args, "--set", f"pipeline.bucket={bucket}"]


@pytest.mark.training
def test_failed_champion_re_evaluation_is_a_retryable_failure(
    faulty_s3, data, models, reports, tmp_path, monkeypatch, capsys
):
    """S3 answers 503 SlowDown while the champion model is downloaded: not promoted, and
    the step fails with the transient exit code (75) so that KFP retries it, not exit 0."""
    from faults import SLOW_DOWN

    from fauna.cli import main
    from fauna.errors import EXIT_TRANSIENT

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    cfg = _cfg(faulty_s3.bucket)
    _publish(reports, models, "weaker", data, "old", cfg, tmp_path)

    new_data = make_dataset_dir(tmp_path / "new-data", seed=1, test_per_class=TEST_PER_CLASS)
    evaluate_model(models["strong"], new_data, tmp_path / "eval", cfg.evaluate)
    compare_backbones([models["strong"]], [tmp_path / "eval"], [], tmp_path / "report", cfg)
    faulty_s3.proxy.only(rf"^GET /{faulty_s3.bucket}/runs/old/models/").always(SLOW_DOWN)
    args = ["publish", "--report", str(tmp_path / "report"), "--models", str(models["strong"])]
    args += ["--data", str(new_data), "--run-id", "new", "--out", str(tmp_path / "out")]
    assert main([*args, "--set", f"pipeline.bucket={faulty_s3.bucket}"]) == EXIT_TRANSIENT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("fauna publish: error: the current champion (old, weaker) could not")
    assert "SlowDown" in err
    assert faulty_s3.proxy.faults > 0
    assert not (tmp_path / "out").exists()  # a failed step leaves no output
    faulty_s3.proxy.reset()
    assert _pointer(faulty_s3.bucket, data)["run_id"] == "old"
    saved = _saved(faulty_s3, "new")
    assert saved["promoted"] is False and "could not be re-evaluated" in saved["reason"]
    assert _history(faulty_s3.bucket, data) == [("old", True)]  # no decision was made

    retried = publish_run(
        tmp_path / "report", [models["strong"]], new_data, "new", tmp_path / "out", cfg
    )
    assert retried.promotion.promoted  # the outage passed: the retry decides for real


@pytest.mark.training
def test_a_503_on_the_pointer_write_promotes_nothing(
    faulty_s3, data, models, reports, tmp_path, monkeypatch
):
    """The records never say "promoted" for a move that failed; the retry promotes."""
    from faults import SLOW_DOWN

    from fauna.errors import TransientError

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    cfg = _cfg(faulty_s3.bucket)
    _publish(reports, models, "weaker", data, "old", cfg, tmp_path)
    faulty_s3.proxy.only(r"^PUT .*/champion\.json").always(SLOW_DOWN)
    with pytest.raises(TransientError, match="SlowDown"):
        _publish(reports, models, "strong", data, "new", cfg, tmp_path)
    faulty_s3.proxy.reset()
    assert _pointer(faulty_s3.bucket, data)["run_id"] == "old"
    saved = _saved(faulty_s3, "new")
    assert saved["promoted"] is False
    assert saved["reason"].startswith("the champion pointer was not moved (") and (
        "SlowDown" in saved["reason"]
    )
    report = storage.read_text(faulty_s3.uri("runs/new/report/report.md"))
    assert "strong was not promoted: the champion pointer was not moved" in report
    assert "promoted to champion" not in report
    assert _history(faulty_s3.bucket, data) == [("old", True)]

    retried = _publish(reports, models, "strong", data, "new", cfg, tmp_path)
    assert retried.promotion.promoted and not retried.promotion.already_champion
    assert _pointer(faulty_s3.bucket, data)["run_id"] == "new"
    assert _saved(faulty_s3, "new")["promoted"] is True
    assert _history(faulty_s3.bucket, data) == [("old", True), ("new", True)]


@pytest.mark.training
def test_a_lost_reply_to_the_pointer_write_is_a_promotion(
    faulty_s3, data, models, reports, tmp_path, monkeypatch
):
    """The pointer write lands, its reply is lost and every retry is cut: read back, done."""
    from faults import DROP, LOST_REPLY

    monkeypatch.setenv(storage.TIMEOUT_ENV, "2")
    cfg = _cfg(faulty_s3.bucket)
    faulty_s3.proxy.only(r"^PUT .*/champion\.json").always(DROP).fail_next(1, LOST_REPLY)
    result = _publish(reports, models, "strong", data, "r1", cfg, tmp_path)
    assert faulty_s3.proxy.faults >= 2  # the lost reply, and botocore's retry cut
    faulty_s3.proxy.reset()
    assert result.promotion.promoted and not result.promotion.already_champion
    assert _pointer(faulty_s3.bucket, data)["run_id"] == "r1"
    assert _saved(faulty_s3, "r1")["promoted"] is True
    assert _history(faulty_s3.bucket, data) == [("r1", True)]


@pytest.mark.training
def test_retry_after_a_cut_connection_says_this_run_is_champion(
    faulty_s3, data, models, reports, tmp_path, monkeypatch
):
    """The pointer write lands, then the store is unreachable: the publish fails; its
    records say "not promoted yet", never "promoted"; the retried publish tells the truth
    and writes the history entry of the move, once."""
    cfg = _publish_losing_the_pointer_reply(
        faulty_s3, monkeypatch, reports, models, "strong", data, tmp_path
    )
    assert not (tmp_path / "out-r1").exists()  # the failed step left no output
    pointer = _pointer(faulty_s3.bucket, data)
    assert pointer["run_id"] == "r1"  # the write landed ...
    for key in ("report/report.html", "publish.json", "models/strong/model.keras"):
        assert storage.exists(faulty_s3.uri(f"runs/r1/{key}")), key  # ... after all it names
    saved = _saved(faulty_s3, "r1")
    assert saved["promoted"] is False and saved["reason"].startswith("not promoted yet: ")
    report = storage.read_text(faulty_s3.uri("runs/r1/report/report.md"))
    assert "strong was not promoted yet" in report and "promoted to champion" not in report
    assert _history(faulty_s3.bucket, data) == []

    for _ in range(2):  # a retry, and a retry of the retry
        retried = _publish(reports, models, "strong", data, "r1", cfg, tmp_path)
        assert retried.promotion.promoted and retried.promotion.already_champion
        assert "this run is already the champion" in retried.promotion.reason
        assert _pointer(faulty_s3.bucket, data) == pointer  # nothing moved again
        saved = _saved(faulty_s3, "r1")
        assert saved["promoted"] is True and saved["already_champion"]
        report = storage.read_text(faulty_s3.uri("runs/r1/report/report.md"))
        assert "already the champion" in report
        history = champion.read_history(faulty_s3.bucket, _key(data))
        assert [(h["run_id"], h["moved_pointer"]) for h in history] == [("r1", True)]
        assert history[0]["decided_at"] == pointer["promoted_at"]
        assert history[0]["reason"] == pointer["reason"] and history[0]["recorded_later"]


@pytest.mark.training
def test_the_next_move_records_a_move_nobody_recorded(
    faulty_s3, data, models, reports, tmp_path, monkeypatch
):
    """r1's pointer write lands but its publish dies before recording; r1 is never retried.
    The next publish that moves the pointer writes r1's entry as well, once."""
    cfg = _publish_losing_the_pointer_reply(
        faulty_s3, monkeypatch, reports, models, "medium", data, tmp_path
    )
    assert _pointer(faulty_s3.bucket, data)["run_id"] == "r1"
    assert _history(faulty_s3.bucket, data) == []

    assert _publish(reports, models, "strong", data, "r2", cfg, tmp_path).promotion.promoted
    history = champion.read_history(faulty_s3.bucket, _key(data))
    assert [(h["run_id"], h["moved_pointer"]) for h in history] == [("r1", True), ("r2", True)]
    assert history[0]["recorded_later"] and history[1]["replaced"]["run_id"] == "r1"


@pytest.mark.training
def test_kill_9_while_the_pointer_write_stalls(faulty_s3, data, models, reports, tmp_path):
    """`fauna publish` killed while its pointer write hangs: nothing claims a promotion."""
    from faults import STALL
    from stepkill import kill_when

    faulty_s3.proxy.only(r"^PUT .*/champion\.json").always(STALL)
    argv = _publish_args(reports, models, "strong", data, "r1", tmp_path / "out", faulty_s3.bucket)

    def stalled() -> bool:
        return any(a == STALL for _m, _p, a in faulty_s3.proxy.history)

    env = {storage.TIMEOUT_ENV: "120"}
    killed = kill_when(argv, stalled, 0.5, preload=(), env=env, wait_s=180)
    assert killed, "publish ended before writing the pointer"
    faulty_s3.proxy.reset()
    assert champion.read_pointer(faulty_s3.bucket, _key(data)) is None
    saved = _saved(faulty_s3, "r1")
    assert saved["promoted"] is False and saved["reason"].startswith("not promoted yet: ")
    assert _history(faulty_s3.bucket, data) == []

    cfg = _cfg(faulty_s3.bucket)
    retried = publish_run(reports["strong"][0], [models["strong"]], data, "r1",
                          tmp_path / "out-retry", cfg)  # fmt: skip
    assert retried.promotion.promoted and not retried.promotion.already_champion
    assert _saved(faulty_s3, "r1")["promoted"] is True
    assert _history(faulty_s3.bucket, data) == [("r1", True)]


@pytest.mark.training
def test_publish_refuses_a_store_that_ignores_conditional_writes(
    faulty_s3, data, models, reports, tmp_path, capsys
):
    """Through a proxy that strips If-Match / If-None-Match, the pointer is never written."""
    from fauna.cli import main
    from fauna.errors import EXIT_ERROR

    faulty_s3.proxy.strip_conditions()
    argv = _publish_args(reports, models, "strong", data, "r1", tmp_path / "out", faulty_s3.bucket)
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fauna publish: error: the store at {faulty_s3.proxy.endpoint}")
    assert '"If-None-Match: *" on an existing key was accepted' in err
    faulty_s3.proxy.reset()
    assert champion.read_pointer(faulty_s3.bucket, _key(data)) is None
    saved = _saved(faulty_s3, "r1")
    assert saved["promoted"] is False and "does not enforce conditional writes" in saved["reason"]


# A publish that gives up on a flaky S3 fails closed (no pointer move, no output); the
# pipeline's retry runs it again, and a retried publish is idempotent (tested above).
PUBLISH_ATTEMPTS = 3


def _race(trial: int, bucket: str, data, models, reports, tmp_path) -> dict[str, int]:
    """Two publishes started at the same moment (a scheduled and a manual run), checked.

    The better model ends as champion; the history holds both decisions, and its
    promotions form one chain, each naming the champion it replaced; exactly one publish
    claims the final promotion; every publish.json says what really happened.
    """
    storage.ensure_bucket(bucket)
    cfg = _cfg(bucket)
    results, errors = {}, []
    start = threading.Barrier(2)

    retried = []

    def publish(run_id: str, name: str) -> None:
        try:
            start.wait()
            out = tmp_path / f"{trial}-{run_id}"
            for attempt in range(1, PUBLISH_ATTEMPTS + 1):
                try:
                    results[run_id] = publish_run(
                        reports[name][0], [models[name]], data, run_id, out, cfg
                    )
                    return
                except storage.StorageError:  # S3 kept failing past the deadline: as a
                    if attempt == PUBLISH_ATTEMPTS:  # KFP retry would, run the step again
                        raise
                    retried.append(run_id)
        except Exception as exc:  # reported below, with the trial
            errors.append(exc)

    threads = [
        threading.Thread(target=publish, args=("weak-run", "medium")),
        threading.Thread(target=publish, args=("strong-run", "strong")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [], f"trial {trial}: {errors}"
    pointer = _pointer(bucket, data)
    assert pointer["run_id"] == "strong-run", f"trial {trial}"
    history = champion.read_history(bucket, _key(data))
    assert sorted(h["run_id"] for h in history) == ["strong-run", "weak-run"]
    chain, replaced = [], {h["run_id"]: (h["replaced"] or {}).get("run_id") for h in history
                           if h["moved_pointer"]}  # fmt: skip
    run = pointer["run_id"]
    while run is not None:  # from the final champion back to the first
        chain.append(run)
        run = replaced.pop(run)
    assert replaced == {}, f"trial {trial}: promotions outside the chain: {replaced}"
    claims = [r.run_id for r in results.values() if r.promotion.promoted]
    assert sorted(claims) == sorted(chain), f"trial {trial}"  # each claim is a real promotion
    assert chain[0] == "strong-run"  # ... and exactly one of them is the final one
    for run_id, result in results.items():
        saved = json.loads(storage.read_text(f"s3://{bucket}/runs/{run_id}/publish.json"))
        assert saved == json.loads(json.dumps(result.to_dict())), f"trial {trial} {run_id}"
    return {
        "publish retried after an S3 failure": len(retried),
        "re-decided": sum(h["rounds"] > 1 for h in history),
        "weak promoted, then replaced": int(len(chain) == 2),
        "weak not promoted": int(len(chain) == 1),
    }


def _races(n: int, s3, data, models, reports, tmp_path) -> dict[str, int]:
    totals: dict[str, int] = {}
    for trial in range(n):
        outcome = _race(trial, f"{s3}-r{trial}", data, models, reports, tmp_path)
        for key, count in outcome.items():
            totals[key] = totals.get(key, 0) + count
    print(f"{n} races: {totals}")
    return totals


@pytest.mark.training
def test_two_publishes_at_once(s3, data, models, reports, tmp_path):
    """Ten races: the better model always wins, and the compare-and-swap is really exercised."""
    totals = _races(10, s3, data, models, reports, tmp_path)
    assert totals["re-decided"] > 0  # the publishes did collide: a lost write was re-decided


@pytest.mark.training
@pytest.mark.slow
def test_many_publish_races(s3, data, models, reports, tmp_path):
    _races(50, s3, data, models, reports, tmp_path)


@pytest.mark.training
@pytest.mark.slow
def test_publish_races_through_a_flaky_s3(faulty_s3, data, models, reports, tmp_path, monkeypatch):
    """The same races while every 4th S3 request is answered 503 SlowDown.

    With the default deadline (60 s) a call is retried about 7 times; with 10 s, 4 (a
    call that drew the 4th slot 4 times in a row gave up in 1 of 10 trials once). A
    publish that gives up anyway is run again, as the pipeline's retry would.
    """
    from faults import SLOW_DOWN

    monkeypatch.setenv(storage.TIMEOUT_ENV, str(storage.DEFAULT_TIMEOUT_SECONDS))
    faulty_s3.proxy.fail_every(4, SLOW_DOWN)
    _races(10, faulty_s3.bucket, data, models, reports, tmp_path)
    print(f"faults injected: {faulty_s3.proxy.faults} of {faulty_s3.proxy.requests} requests")
    assert faulty_s3.proxy.faults > 0
