"""The Model Registry hook: the real `model-registry` client against a stand-in server.

The stand-in (tests/registry_standin.py) runs on 127.0.0.1, speaks the registry's REST API
and checks every request body against the client's own OpenAPI models; publish runs on real
tiny models in the embedded S3 (as tests/test_publish.py builds them).
"""

from __future__ import annotations

import csv
import json
import logging
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import test_publish as tp
from registry_standin import StandinRegistry
from test_evaluate import make_dataset_dir, make_model_dir

from fauna import cli
from fauna.config import Config
from fauna.steps.compare import compare_backbones
from fauna.steps.evaluate import evaluate_model
from fauna.steps.publish import publish_run, signature_of_test_split
from fauna.store import champion, registry, storage
from fauna.store.champion import DatasetId

API = "/api/model_registry/v1alpha3"


def _post(url: str, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        url + API + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ------------------------------------------------------------------ the stand-in itself


def test_standin_answers_bad_requests_as_the_server_does():
    """Errors as kubeflow/model-registry test/robot/Regression.robot records them."""
    with StandinRegistry() as server:
        status, body = _post(server.url, "/registered_models", {"name": "m", "ext_id": 123})
        unknown = {"code": "Bad Request", "message": 'json: unknown field "ext_id"'}
        assert (status, body) == (400, unknown)
        status, created = _post(server.url, "/registered_models", {"name": "m"})
        assert status == 201 and created["id"] and created["state"] == "LIVE"
        status, body = _post(server.url, "/model_versions", {"registeredModelId": created["id"]})
        assert status == 422 and body["code"] == "Bad Request"
        assert _post(server.url, "/registered_models", {"name": "m"})[0] == 409
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(server.url + API + "/registered_model?name=nope", timeout=10)
        assert err.value.code == 404 and json.loads(err.value.read())["code"] == "Not Found"


def test_no_registry_configured_is_off(monkeypatch, capsys):
    monkeypatch.delenv(registry.URL_ENV, raising=False)
    assert registry.registry_url(Config()) == ""
    assert registry.after_publish({"run_id": "r"}, Config()) is None  # nothing is read
    assert cli.main(["register", "--run", "r"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "set model_registry.url or MODEL_REGISTRY_URL" in err


def test_env_overrides_the_config(monkeypatch):
    cfg = Config().merged({"model_registry": {"url": "http://configured:8080"}})
    monkeypatch.delenv(registry.URL_ENV, raising=False)
    assert registry.registry_url(cfg) == "http://configured:8080"
    monkeypatch.setenv(registry.URL_ENV, "http://from-env:8080")
    assert registry.registry_url(cfg) == "http://from-env:8080"


def test_a_registry_that_never_answers_is_bounded():
    """A server that accepts connections and says nothing: the call ends at the timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        cfg = Config().merged({"model_registry": {"timeout_seconds": 1}})
        with pytest.raises(Exception) as err:
            registry.Registry(url, cfg)
    assert registry.one_line(err.value) == "no answer in time"


def test_datasets_sharing_a_name_and_the_champion_across_pages():
    """Two datasets named alike get two models; marking walks every page of versions."""
    a, b = {"name": "tiny", "key": "data-a"}, {"name": "tiny", "key": "data-b"}
    with StandinRegistry(page_size=2) as server:
        reg = registry.Registry(server.url, Config())
        try:
            assert reg.registered_model(a) == ("tiny", None)
            for n in range(5):
                spec = registry.VersionSpec(f"b{n}", f"r/b{n}", f"s3://x/b{n}/export", "", {})
                reg.put_version("tiny", spec)
            reg.describe("tiny", a)
            assert reg.registered_model(a)[0] == "tiny"
            assert reg.registered_model(b) == ("tiny (data-b)", None)
            assert reg.mark_champion("tiny", "r/b4", "t1") is not None
            assert reg.mark_champion("tiny", "r/b1", "t2") is not None
            assert reg.mark_champion("tiny", "r/gone", "t3") is None  # not registered
        finally:
            reg.close()
        props = {name: v["props"] for name, v in server.versions().items()}
    assert props["r/b4"]["champion"] == "false" and props["r/b4"]["promoted_at"] == "t1"
    assert props["r/b1"]["champion"] == "false" and props["r/b1"]["promoted_at"] == "t2"
    assert [n for n, p in props.items() if p.get("champion") == "true"] == []


# ---------------------------------------------------------------- through publish_run


@pytest.fixture(scope="module")
def run_models(tmp_path_factory) -> dict:
    """Tiny real models strong > medium > weaker, one report of each alone and of all three."""
    root = tmp_path_factory.mktemp("registry")
    data = make_dataset_dir(root / "data", seed=0)
    strong = make_model_dir(root / "strong", data, "strong", epochs=6, lr=3e-2)
    cfg = Config()
    evals = {"strong": root / "eval-strong"}
    assert evaluate_model(strong, data, evals["strong"], cfg.evaluate)["macro_f1"] >= 0.6
    with (evals["strong"] / "per_class.csv").open() as fh:  # knock out its best classes
        f1 = [float(row["f1"]) for row in csv.DictReader(fh)]
    best = sorted(range(len(f1)), key=f1.__getitem__, reverse=True)
    models = {
        "strong": strong,
        "medium": tp._knock_out(strong, root / "medium", "medium", best[:1]),
        "weaker": tp._knock_out(strong, root / "weaker", "weaker", best[:2]),
    }
    for name in ("medium", "weaker"):
        evals[name] = root / f"eval-{name}"
        evaluate_model(models[name], data, evals[name], cfg.evaluate)
    reports = {"medium": root / "report-medium", "all": root / "report-all"}
    compare_backbones([models["medium"]], [evals["medium"]], [], reports["medium"], cfg)
    names = sorted(models)
    compare_backbones(
        [models[n] for n in names], [evals[n] for n in names], [], reports["all"], cfg
    )
    return {"data": data, "models": models, "reports": reports}


def _publish(run_models, which: str, run_id: str, bucket: str, tmp_path: Path):
    names = ["medium"] if which == "medium" else ["strong", "medium", "weaker"]
    cfg = Config().merged({"pipeline": {"bucket": bucket}})
    return publish_run(
        run_models["reports"][which],
        [run_models["models"][n] for n in names],
        run_models["data"],
        run_id,
        tmp_path / f"out-{run_id}",
        cfg,
    )


@pytest.mark.training
def test_publish_registers_every_model_and_marks_the_champion(
    s3, run_models, tmp_path, monkeypatch
):
    data = run_models["data"]
    key = DatasetId.from_folder(data).key
    with StandinRegistry() as server:
        monkeypatch.setenv(registry.URL_ENV, server.url)
        first = _publish(run_models, "medium", "run-1", s3, tmp_path)
        assert first.promotion.promoted
        assert server.versions()["run-1/medium"]["props"]["champion"] == "true"

        result = _publish(run_models, "all", "run-2", s3, tmp_path)
        assert result.promotion.promoted and not result.promotion.already_champion
        versions = server.versions()
        # Every request the client made was valid; the only 4xx are "not found yet" finds.
        answers = list(zip(server.requests, server.statuses, strict=True))
        assert [(r[:2], s) for r, s in answers if s >= 400 and r[0] != "GET"] == []
        assert {s for r, s in answers if r[0] == "GET"} <= {200, 404}

    assert sorted(versions) == ["run-1/medium", "run-2/medium", "run-2/strong", "run-2/weaker"]
    (rm,) = server.store.items["registered_models"].values()
    assert rm["name"] == "tiny" and rm["customProperties"]["dataset_key"]["string_value"] == key
    pointer = champion.read_pointer(s3, key)[0]
    assert (pointer["run_id"], pointer["backbone"]) == ("run-2", "strong")
    comparison = json.loads(storage.read_text(f"{result.report_uri}/metrics.json"))
    signature = signature_of_test_split(data)
    for backbone in ("strong", "medium", "weaker"):
        version = versions[f"run-2/{backbone}"]
        props = version["props"]
        (artifact,) = version["artifacts"]
        assert artifact["uri"] == f"s3://{s3}/runs/run-2/models/{backbone}/export"
        assert artifact["modelFormatName"] == "tensorflow"
        scores = comparison["backbones"][backbone]
        assert props["metric.macro_f1"] == pytest.approx(scores["macro_f1"])
        assert props["metric.top1"] == pytest.approx(scores["top1"])
        assert props["kfp_run_id"] == "run-2" and props["dataset_key"] == key
        assert props["data_version"] == f"{key}/test-{signature}"
        assert json.loads(props["classes"]) == json.loads((data / "classes.json").read_text())
        assert props["git_sha"] and props["git_sha"] != "unknown"
    # Exactly one champion: the pointer's; the one it replaced says so and when.
    champions = [name for name, v in versions.items() if v["props"]["champion"] == "true"]
    assert champions == ["run-2/strong"]
    assert versions["run-2/strong"]["props"]["promoted_at"] == pointer["promoted_at"]
    assert versions["run-1/medium"]["props"]["champion"] == "false"
    assert versions["run-1/medium"]["props"]["replaced_at"]


@pytest.mark.training
def test_registry_down_or_refusing_never_blocks_publish_then_register_backfills(
    s3, run_models, tmp_path, monkeypatch, caplog, capsys
):
    data = run_models["data"]
    key = DatasetId.from_folder(data).key
    monkeypatch.setenv(registry.URL_ENV, f"http://127.0.0.1:{_free_port()}")  # nobody there
    with caplog.at_level(logging.WARNING, logger="fauna"):
        result = _publish(run_models, "all", "run-down", s3, tmp_path)
    assert result.promotion.promoted
    assert champion.read_pointer(s3, key)[0]["run_id"] == "run-down"
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "fauna.store.registry"]
    assert "\n" not in warning and "fauna register --run run-down" in warning

    with StandinRegistry() as server:
        monkeypatch.setenv(registry.URL_ENV, server.url)
        server.refuse_with(503)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="fauna"):
            again = _publish(run_models, "all", "run-refused", s3, tmp_path)
        assert not again.promotion.promoted  # the same models: not better; publish still ends
        (warning,) = [r.getMessage() for r in caplog.records if r.name == "fauna.store.registry"]
        assert "HTTP 503" in warning and "\n" not in warning
        assert server.store.items["model_versions"] == {}

        server.refuse_with(None)
        capsys.readouterr()
        argv = ["register", "--run", "run-down", "--set", f"pipeline.bucket={s3}"]
        assert cli.main(argv) == 0
        summary = json.loads(capsys.readouterr().out)
        assert cli.main(argv) == 0  # idempotent: updated, not duplicated
        versions = server.versions()
    assert summary["champion"] == "run-down/strong"
    assert sorted(versions) == ["run-down/medium", "run-down/strong", "run-down/weaker"]
    assert [n for n, v in versions.items() if v["props"]["champion"] == "true"] == [
        "run-down/strong"
    ]
    assert all(len(v["artifacts"]) == 1 for v in versions.values())


def test_register_of_an_unknown_run_is_one_line(s3, monkeypatch, capsys):
    with StandinRegistry() as server:
        monkeypatch.setenv(registry.URL_ENV, server.url)
        assert cli.main(["register", "--run", "nope", "--set", f"pipeline.bucket={s3}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"s3://{s3}/runs/nope/publish.json not found" in err


def test_chart_turns_the_registry_on_for_the_publish_step(tmp_path):
    """modelRegistry.enabled puts the URL in the params the CronJob submits; the compiled
    pipeline then gives it to the publish step (and to no other step)."""
    import test_chart as tc
    import yaml
    from helm_python import Chart
    from kfp import compiler

    from fauna.config import load_config
    from fauna.pipelines.pipeline import build_pipeline

    url = "http://model-registry-service.kubeflow.svc.cluster.local:8080"
    with Chart.load(tc.CHART) as chart:
        off = tc.named(tc.objects(tc.render(chart)), "ConfigMap", "fauna-params")
        on = tc.named(
            tc.objects(tc.render(chart, {"modelRegistry": {"enabled": True}})),
            "ConfigMap",
            "fauna-params",
        )
    assert "model_registry" not in yaml.safe_load(off["data"]["params.yaml"])
    (tmp_path / "params.yaml").write_text(on["data"]["params.yaml"])
    cfg = load_config(tmp_path / "params.yaml")
    assert cfg.model_registry.url == url
    compiler.Compiler().compile(build_pipeline(cfg), str(tmp_path / "p.yaml"))
    spec = next(yaml.safe_load_all((tmp_path / "p.yaml").read_text()))
    envs = {
        name: executor["container"].get("env")
        for name, executor in spec["deploymentSpec"]["executors"].items()
    }
    assert envs.pop("exec-publish") == [{"name": "MODEL_REGISTRY_URL", "value": url}]
    assert not any(envs.values())
