"""submit and schedule with the real kfp.Client against a local stand-in for the KFP API."""

from __future__ import annotations

import json

import pytest
import yaml
from kfp_standin import KfpStandIn

from fauna.cli import main
from fauna.errors import FaunaError
from fauna.pipelines.cli import validate_cron

SECRET = "s3cr3t-do-not-leak-7f2a"


@pytest.fixture
def kfp_api():
    api = KfpStandIn().start()
    yield api
    api.stop()


@pytest.fixture
def secret_env(monkeypatch):
    """Credentials present in the submitter's environment must never reach the cluster request."""
    for key in ("AWS_SECRET_ACCESS_KEY", "KAGGLE_KEY", "AWS_ACCESS_KEY_ID"):
        monkeypatch.setenv(key, SECRET)


def _posts(api: KfpStandIn, path_suffix: str):
    return [r for r in api.requests if r.method == "POST" and r.path.endswith(path_suffix)]


def test_submit_sends_the_spec_and_parameters_without_secrets(kfp_api, secret_env, capsys):
    rc = main(
        [
            "submit",
            "--host",
            kfp_api.url,
            "--experiment",
            "exp1",
            "--set",
            "train.backbones=[vgg16, resnet50]",
            "--set",
            "pipeline.use_gpu=false",
        ]
    )
    assert rc == 0
    (create,) = _posts(kfp_api, "/runs")
    assert SECRET not in create.raw
    sent = create.body["pipeline_spec"]  # the pipeline spec and its Kubernetes platform spec
    assert sent["pipeline_spec"]["pipelineInfo"]["name"] == "fauna"
    executors = sent["platform_spec"]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {s["secretName"] for s in executors["exec-publish"]["secretAsEnv"]} == {"fauna-s3"}
    params = create.body["runtime_config"]["parameters"]
    assert params["backbones"] == ["vgg16", "resnet50"]
    assert json.loads(params["config_json"])["pipeline"]["use_gpu"] is False
    assert [e["display_name"] for e in kfp_api.experiments.values()] == ["exp1"]
    assert create.body["experiment_id"] in kfp_api.experiments
    assert "submitted run" in capsys.readouterr().out


@pytest.mark.parametrize("state, code", [("SUCCEEDED", 0), ("FAILED", 1)])
def test_submit_wait_follows_the_run(kfp_api, state, code, capsys, monkeypatch):
    kfp_api.run_final_state = state
    monkeypatch.setenv("KF_PIPELINES_ENDPOINT", kfp_api.url)  # the host from the environment
    assert main(["submit", "--wait"]) == code
    assert f"finished: {state}" in capsys.readouterr().out


def test_submit_unreachable_host_is_one_line(capsys):
    assert main(["submit", "--host", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "fauna submit: error: cannot reach Kubeflow Pipelines at http://127.0.0.1:9"
    )
    assert "\n" not in err


def test_schedule_is_idempotent_and_carries_the_cron(kfp_api, secret_env, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"backbones": ["resnet50"]}}))
    for _ in range(2):
        assert (
            main(
                [
                    "schedule",
                    "--host",
                    kfp_api.url,
                    "--cron",
                    "0 0 3 * * 0",
                    "--name",
                    "weekly",
                    "--params",
                    str(params),
                ]
            )
            == 0
        )
    creates = _posts(kfp_api, "/recurringruns")
    assert len(creates) == 2 and len(kfp_api.recurring) == 1  # replaced, not added
    body = creates[-1].body
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    assert body["no_catchup"] is True and int(body["max_concurrency"]) == 1
    assert body["display_name"] == "weekly"
    assert body["runtime_config"]["parameters"]["backbones"] == ["resnet50"]
    assert SECRET not in creates[-1].raw
    deletes = [r for r in kfp_api.requests if r.method == "DELETE"]
    assert len(deletes) == 1


def test_schedule_list_and_delete(kfp_api, capsys):
    assert main(["schedule", "--host", kfp_api.url, "--cron", "0 30 2 * * *", "--name", "n1"]) == 0
    assert main(["schedule", "--host", kfp_api.url, "--list"]) == 0
    assert "n1\t0 30 2 * * *" in capsys.readouterr().out
    assert main(["schedule", "--host", kfp_api.url, "--delete", "n1"]) == 0
    assert kfp_api.recurring == {}


@pytest.mark.parametrize(
    "expr, message",
    [
        ("0 3 * * 0", "has 5 field"),
        ("0 0 25 * * 0", "hour field '25'"),
        ("0 0 3 * * FUNDAY", "day of week"),
        ("0 */x 3 * * 0", "step 'x'"),
    ],
)
def test_cron_validation_is_clear(expr, message):
    with pytest.raises(FaunaError, match=message):
        validate_cron(expr)


def test_cron_accepts_kfp_forms():
    for expr in (
        "0 0 3 * * 0",
        "0 0 9 ? * MON-FRI",
        "0 */15 * * * *",
        "@weekly",
        "0 0 0 1 JAN,JUL *",
    ):
        assert validate_cron(expr)


def test_schedule_bad_cron_is_one_line(capsys):
    assert main(["schedule", "--host", "http://127.0.0.1:9", "--cron", "0 3 * * 0"]) == 2
    assert "KFP needs 6, seconds first" in capsys.readouterr().err
