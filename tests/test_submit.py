"""submit, retry and schedule with the real kfp.Client against tests/kfp_standin.py.

The stand-in enforces the KFP backend's rules (each cites its source file there):
namespaces in multi-user mode, the healthz version, unique pipeline and version names,
runs of a version, retry only of a FAILED run, recurring runs.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from kfp_standin import KfpStandIn

from fauna.cli import main
from fauna.config import Config
from fauna.errors import FaunaError
from fauna.pipelines import kfp_backend, kfp_objects
from fauna.pipelines.cluster import compile_pipeline, validate_cron

SECRET = "s3cr3t-do-not-leak-7f2a"
TOKEN = "token-of-the-fauna-service-account"
CPU = ["--set", "pipeline.use_gpu=false"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No namespace, token, UI or kubeconfig leaks in from the machine running the tests."""
    for name in (
        kfp_backend.HOST_ENV,
        kfp_backend.UI_ENV,
        kfp_backend.TOKEN_FILE_ENV,
        kfp_backend.TOKEN_ENV,
        kfp_backend.COOKIES_ENV,
        kfp_backend.NAMESPACE_ENV,
        "FAUNA_SIDECAR_QUIT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    monkeypatch.setattr(kfp_backend, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "no-sa-namespace")
    monkeypatch.setenv(kfp_objects.REVISION_ENV, "0a1b2c3d4e5f")
    monkeypatch.setattr(kfp_objects, "POLL_SECONDS", 0.01)
    # fauna.logs binds its handler to the stderr of the first test; capsys swaps stderr.
    monkeypatch.setattr(logging.getLogger("fauna"), "handlers", [])


@pytest.fixture
def kfp_api():
    api = KfpStandIn().start()
    yield api
    api.stop()


@pytest.fixture
def multi_user(kfp_api, monkeypatch):
    """Multi-user KFP; the token may use namespace team-a only."""
    kfp_api.multi_user = True
    kfp_api.tokens = {TOKEN: ("system:serviceaccount:team-a:fauna", {"team-a"})}
    monkeypatch.setenv(kfp_backend.TOKEN_ENV, TOKEN)
    return kfp_api


@pytest.fixture
def secret_env(monkeypatch):
    """Credentials present in the submitter's environment must never reach the cluster."""
    for key in ("AWS_SECRET_ACCESS_KEY", "KAGGLE_KEY", "AWS_ACCESS_KEY_ID"):
        monkeypatch.setenv(key, SECRET)


def _posts(api: KfpStandIn, suffix: str):
    return [r for r in api.requests if r.method == "POST" and r.path.endswith(suffix)]


def _error_line(capsys) -> str:
    """The one error line a failed command prints (log lines may precede it)."""
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("fauna ")]
    return line


def _submit(api: KfpStandIn, *args: str) -> int:
    return main(["submit", "--host", api.url, *CPU, *args])


def test_submit_uploads_one_version_and_runs_it_without_secrets(
    kfp_api, secret_env, tmp_path, capsys
):
    args = ["--experiment", "exp1", "--set", "train.backbones=[vgg16, resnet50]"]
    assert _submit(kfp_api, *args, "--epochs", "3") == 0
    assert _submit(kfp_api, *args) == 0
    assert all(SECRET not in r.raw for r in kfp_api.requests)

    (pipeline,) = kfp_api.pipelines.values()
    (version,) = kfp_api.versions.values()  # the second submit reused it
    assert pipeline["name"] == "fauna" and version["pipeline_id"] == pipeline["pipeline_id"]
    cfg = Config().merged(
        {"pipeline": {"use_gpu": False}, "train": {"backbones": ["vgg16", "resnet50"]}}
    )
    package = compile_pipeline(cfg, tmp_path / "expected.yaml")
    assert version["spec"] == package.read_text()  # what was uploaded is the compiled YAML
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:10]
    assert version["name"] == f"0a1b2c3d4e5f-{digest}"  # git SHA + hash of the YAML
    spec, platform = list(yaml.safe_load_all(version["spec"]))
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert {s["secretName"] for s in executors["exec-publish"]["secretAsEnv"]} == {"fauna-s3"}

    first, second = _posts(kfp_api, "/runs")
    for run in (first, second):
        reference = run.body["pipeline_version_reference"]
        assert reference["pipeline_version_id"] == version["pipeline_version_id"]
        assert "pipeline_spec" not in run.body  # the run names the version, not a copy
        assert run.body["experiment_id"] in kfp_api.experiments
    assert first.body["runtime_config"]["parameters"]["epochs"] == 3
    assert second.body["runtime_config"]["parameters"]["backbones"] == ["vgg16", "resnet50"]
    assert [e["display_name"] for e in kfp_api.experiments.values()] == ["exp1"]
    run_id = list(kfp_api.runs)[0]
    link = f"{kfp_api.url}/#/runs/details/{run_id}"  # the stand-in's host is a UI-style host
    assert f"submitted run {run_id}: {link}" in capsys.readouterr().out


def test_a_different_config_is_a_different_version(kfp_api):
    assert _submit(kfp_api) == 0
    assert _submit(kfp_api, "--set", "pipeline.step_cpu=1") == 0
    assert len(kfp_api.versions) == 2 and len(kfp_api.pipelines) == 1
    names = {v["name"] for v in kfp_api.versions.values()}
    assert all(n.startswith("0a1b2c3d4e5f-") for n in names)


def test_the_version_is_named_by_the_git_sha_without_fauna_revision(kfp_api, monkeypatch):
    monkeypatch.delenv(kfp_objects.REVISION_ENV)
    root = Path(__file__).resolve().parent.parent
    sha = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True, text=True
    ).stdout.strip()
    assert _submit(kfp_api) == 0
    (version,) = kfp_api.versions.values()
    assert sha and version["name"].startswith(sha + "-")


@pytest.mark.parametrize(
    "outcomes, extra, code, retries",
    [
        (["SUCCEEDED"], [], 0, 0),
        (["FAILED", "SUCCEEDED"], [], 0, 1),  # default: pipeline.run_retries = 2
        (["FAILED", "FAILED", "FAILED"], [], 1, 2),
        (["FAILED", "SUCCEEDED"], ["--retries", "0"], 1, 0),
        (["CANCELED"], [], 1, 0),  # a canceled run is final: kfp's own wait would hang
    ],
)
def test_wait_retries_a_failed_run_under_the_same_run_id(
    kfp_api, outcomes, extra, code, retries, capsys
):
    kfp_api.run_outcomes = outcomes
    assert _submit(kfp_api, "--wait", *extra) == code
    (run_id,) = kfp_api.runs
    retried = [r for r in kfp_api.requests if r.path.endswith(":retry")]
    assert [r.path for r in retried] == [f"/apis/v2beta1/runs/{run_id}:retry"] * retries
    assert len(_posts(kfp_api, "/runs")) == 1  # retried, never re-submitted
    out = capsys.readouterr().out
    assert f"run {run_id} finished: {kfp_api.runs[run_id]['state']}" in out


def test_retry_flag_reruns_a_failed_run_and_refuses_others(kfp_api, capsys):
    kfp_api.run_outcomes = ["FAILED", "SUCCEEDED"]
    assert _submit(kfp_api, "--wait", "--retries", "0") == 1
    (run_id,) = kfp_api.runs
    assert _submit(kfp_api, "--retry", run_id, "--wait") == 0
    assert kfp_api.runs[run_id]["state"] == "SUCCEEDED" and len(kfp_api.runs) == 1
    assert f"retrying run {run_id}" in capsys.readouterr().out
    assert _submit(kfp_api, "--retry", run_id) == 2
    assert "is SUCCEEDED: only a FAILED run can be retried" in capsys.readouterr().err


def test_the_backend_refuses_to_retry_a_run_that_did_not_fail(kfp_api):
    """The backend's own rule and message, passed through in one line."""
    kfp_api.run_outcomes = ["SUCCEEDED"]
    assert _submit(kfp_api, "--wait") == 0
    (run_id,) = kfp_api.runs
    backend = kfp_backend.connect(kfp_backend.ConnectOptions(host=kfp_api.url))
    with pytest.raises(kfp_backend.SubmitError) as err:
        kfp_backend.api_call(
            "retrying the run", backend.client.runs.run_service_retry_run, run_id=run_id
        )
    text = str(err.value)
    assert "HTTP 409" in text and "Workflow must be Failed/Error to retry" in text
    assert "\n" not in text


def test_a_local_source_is_refused_before_anything_is_sent(kfp_api, capsys, tmp_path):
    assert _submit(kfp_api, "--source", str(tmp_path)) == 2
    assert "a cluster run cannot read the local path" in capsys.readouterr().err
    assert _schedule(kfp_api, "--cron", "@weekly", "--source", "./photos") == 2
    assert kfp_api.requests == []


def test_retries_need_wait(kfp_api, capsys):
    assert _submit(kfp_api, "--retries", "3") == 2
    assert "--retries needs --wait" in capsys.readouterr().err
    assert kfp_api.requests == []


def test_multi_user_without_a_namespace_stops_before_any_request(multi_user, capsys):
    assert _submit(multi_user) == 2
    err = capsys.readouterr().err
    assert "runs in multi-user mode: give --namespace" in err and "\n" not in err.strip()
    assert [r.path for r in multi_user.requests] == ["/apis/v2beta1/healthz"]


@pytest.mark.parametrize("serves_ui", [False, True], ids=["api-server", "ui-server"])
def test_multi_user_namespace_from_the_kubeconfig(multi_user, tmp_path, monkeypatch, serves_ui):
    multi_user.serves_ui = serves_ui
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "current-context": "work",
                "contexts": [
                    {"name": "other", "context": {"namespace": "team-b"}},
                    {"name": "work", "context": {"cluster": "c", "namespace": "team-a"}},
                ],
            }
        )
    )
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert _submit(multi_user) == 0
    (experiment,) = multi_user.experiments.values()
    (pipeline,) = multi_user.pipelines.values()
    (run,) = multi_user.runs.values()
    assert experiment["namespace"] == pipeline["namespace"] == run["namespace"] == "team-a"
    api_requests = [r for r in multi_user.requests if not r.path.endswith("/healthz")]
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api_requests)


def test_multi_user_token_file_and_namespace_from_the_downward_api(
    multi_user, tmp_path, monkeypatch
):
    """What the chart's CronJob does: a projected token file and $KF_PIPELINES_NAMESPACE."""
    monkeypatch.delenv(kfp_backend.TOKEN_ENV)
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    monkeypatch.setenv(kfp_backend.TOKEN_FILE_ENV, str(token))
    monkeypatch.setenv(kfp_backend.NAMESPACE_ENV, "team-a")
    assert _submit(multi_user, "--wait") == 0
    assert [r["namespace"] for r in multi_user.runs.values()] == ["team-a"]


def test_a_token_file_is_read_again_for_every_request(multi_user, tmp_path, monkeypatch):
    """The kubelet rotates a projected token (the chart's expires after 2 h): never cache it."""
    monkeypatch.delenv(kfp_backend.TOKEN_ENV)
    multi_user.tokens["rotated-token"] = ("system:serviceaccount:team-a:fauna", {"team-a"})
    token = tmp_path / "token"
    token.write_text(TOKEN)
    opts = kfp_backend.ConnectOptions(
        host=multi_user.url, namespace="team-a", token_file=str(token)
    )
    backend = kfp_backend.connect(opts)
    assert kfp_objects.find_experiment(backend, "fauna") is None
    token.write_text("rotated-token\n")
    assert kfp_objects.find_experiment(backend, "fauna") is None
    first, second = [r for r in multi_user.requests if r.path.endswith("/experiments")]
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert second.headers["authorization"] == "Bearer rotated-token"


@pytest.mark.parametrize(
    "args, token, message",
    [
        (["--namespace", "team-b"], TOKEN, "User 'system:serviceaccount:team-a:fauna' is not"),
        (["--namespace", "team-a"], None, "User identity is empty in the request header"),
    ],
)
def test_multi_user_refusals_carry_the_backends_text(
    multi_user, monkeypatch, capsys, args, token, message
):
    if token is None:
        monkeypatch.delenv(kfp_backend.TOKEN_ENV)
    assert _submit(multi_user, *args) == 2
    assert message in _error_line(capsys)
    assert multi_user.experiments == {}


@pytest.mark.filterwarnings("ignore::FutureWarning")  # kfp.Client's greeting
def test_an_empty_namespace_gets_the_backends_own_message(multi_user):
    """What every fauna version before this one showed as a bare 'HTTP 400 Bad Request'."""
    import kfp

    backend = kfp_backend.connect(kfp_backend.ConnectOptions(host=multi_user.url, namespace="x"))
    backend.namespace = None
    backend.client = kfp.Client(host=multi_user.url, existing_token=TOKEN)  # none of its own
    with pytest.raises(kfp_backend.SubmitError) as err:
        kfp_objects.ensure_experiment(backend, "fauna")
    assert "HTTP 400" in str(err.value)
    assert "An experiment cannot have an empty namespace in multi-user mode" in str(err.value)


@pytest.mark.parametrize(
    "tag, extra, code, message",
    [
        ("2.14.3", [], 2, "is 2.14.3; fauna needs backend >= 2.15.0"),
        ("unknown", [], 2, "does not report its version"),
        ("unknown", ["--skip-version-check"], 0, ""),
        ("2.15.0", [], 0, ""),
        ("v2.17.0", [], 0, ""),
    ],
)
@pytest.mark.parametrize("serves_ui", [False, True], ids=["api-server", "ui-server"])
def test_backend_version_floor(kfp_api, capsys, tag, extra, code, message, serves_ui):
    kfp_api.tag_name, kfp_api.serves_ui = tag, serves_ui
    assert _submit(kfp_api, *extra) == code
    assert message in capsys.readouterr().err
    assert len(kfp_api.runs) == (1 if code == 0 else 0)


def test_run_link_points_at_the_ui(kfp_api, capsys):
    ui = "https://kubeflow.example.com/pipeline"
    assert _submit(kfp_api, "--ui-url", ui) == 0
    (run_id,) = kfp_api.runs
    assert f"submitted run {run_id}: {ui}/#/runs/details/{run_id}" in capsys.readouterr().out
    # The bare API server (port 8888) serves no UI: say so rather than print a dead link.
    assert kfp_backend.ui_base(None, "http://ml-pipeline.kubeflow:8888") is None
    assert kfp_backend.ui_base(None, "http://localhost:8080") == "http://localhost:8080"


def test_submit_unreachable_host_is_one_line(capsys):
    assert main(["submit", "--host", "http://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        "fauna submit: error: cannot reach Kubeflow Pipelines at http://127.0.0.1:9"
    )
    assert "\n" not in err


def test_the_sidecar_is_told_to_quit_when_submit_ends(monkeypatch):
    """An Istio-injected Job completes only when its sidecar exits (istio/istio#11045)."""
    posts = []

    class Quit(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            posts.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quit)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/quitquitquit"
        monkeypatch.setenv("FAUNA_SIDECAR_QUIT_URL", url)
        assert main(["submit", "--host", "http://127.0.0.1:9"]) == 2  # even when it fails
    finally:
        server.shutdown()
        server.server_close()
    assert posts == ["/quitquitquit"]


def _schedule(api: KfpStandIn, *args: str) -> int:
    return main(["schedule", "--host", api.url, *CPU, *args])


def test_schedule_is_idempotent_and_schedules_the_version(kfp_api, secret_env, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"backbones": ["resnet50"]}}))
    args = ["--cron", "0 0 3 * * 0", "--name", "weekly", "--params", str(params)]
    assert _schedule(kfp_api, *args) == 0
    assert _schedule(kfp_api, *args) == 0
    assert "schedule 'weekly' unchanged" in capsys.readouterr().out
    (create,) = _posts(kfp_api, "/recurringruns")  # the second call changed nothing
    assert [r for r in kfp_api.requests if r.method == "DELETE"] == []
    body = create.body
    assert body["trigger"]["cron_schedule"]["cron"] == "0 0 3 * * 0"
    assert body["no_catchup"] is True and int(body["max_concurrency"]) == 1
    assert body["display_name"] == "weekly" and "pipeline_spec" not in body
    (version,) = kfp_api.versions.values()
    assert (
        body["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    )
    assert body["runtime_config"]["parameters"]["backbones"] == ["resnet50"]
    assert all(SECRET not in r.raw for r in kfp_api.requests)


def test_a_changed_schedule_is_created_before_the_old_one_goes(kfp_api):
    assert _schedule(kfp_api, "--cron", "0 0 3 * * 0", "--name", "weekly") == 0
    (old,) = kfp_api.recurring
    assert _schedule(kfp_api, "--cron", "0 0 4 * * 0", "--name", "weekly") == 0
    (new,) = kfp_api.recurring
    assert new != old
    kinds = [(r.method, r.path) for r in kfp_api.requests if "recurringruns" in r.path]
    create = kinds.index(("POST", "/apis/v2beta1/recurringruns"), 2)
    assert kinds.index(("DELETE", f"/apis/v2beta1/recurringruns/{old}")) > create


def test_a_failed_create_keeps_the_old_schedule(kfp_api, capsys):
    assert _schedule(kfp_api, "--cron", "0 0 3 * * 0", "--name", "weekly") == 0
    before = dict(kfp_api.recurring)
    kfp_api.fail_next_recurring_create = True
    assert _schedule(kfp_api, "--cron", "0 0 5 * * 0", "--name", "weekly") == 2
    assert kfp_api.recurring == before
    assert "creating the recurring run failed: HTTP 400" in capsys.readouterr().err


def test_schedule_list_creates_nothing_and_delete_removes(kfp_api, capsys):
    assert main(["schedule", "--host", kfp_api.url, "--list"]) == 0
    assert "no recurring runs in experiment 'fauna'" in capsys.readouterr().out
    assert [r.method for r in kfp_api.requests if r.method != "GET"] == []
    assert _schedule(kfp_api, "--cron", "0 30 2 * * *", "--name", "n1") == 0
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


# -- retries and the watch under backend faults ------------------------------------------


@pytest.fixture
def fast_backoff(monkeypatch):
    monkeypatch.setattr(kfp_objects, "RETRY_BACKOFF_SECONDS", (0.01,) * 4)
    monkeypatch.setattr(kfp_objects, "WATCH_BACKOFF_MAX_SECONDS", 0.05)


def _retries(api: KfpStandIn) -> list:
    return [r for r in api.requests if r.path.endswith(":retry")]


def test_a_retry_refused_while_the_backend_settles_is_asked_again(kfp_api, fast_backoff, capsys):
    """kubeflow/pipelines#13507: RetryRun right after FAILED answers 500 "already exists"."""
    kfp_api.run_outcomes = ["FAILED", "SUCCEEDED"]
    kfp_api.retry_faults = ["exists", "exists", "exists"]
    assert _submit(kfp_api, "--wait") == 0
    (run_id,) = kfp_api.runs
    assert len(_retries(kfp_api)) == 4  # three refused, the fourth took
    assert kfp_api.runs[run_id]["attempt"] == 1  # retried once, not four times
    captured = capsys.readouterr()
    assert f"run {run_id} finished: SUCCEEDED after 1 retry" in captured.out
    assert "already exists; asking again" in captured.err


def test_retrying_is_bounded_and_ends_in_one_line(kfp_api, fast_backoff, capsys):
    kfp_api.run_outcomes = ["FAILED", "SUCCEEDED"]
    kfp_api.retry_faults = ["exists"] * 10
    assert _submit(kfp_api, "--wait") == 2
    assert len(_retries(kfp_api)) == len(kfp_objects.RETRY_BACKOFF_SECONDS) + 1
    line = _error_line(capsys)
    assert "HTTP 500" in line and "already exists" in line


def test_a_lost_reply_to_a_retry_that_took_is_not_retried_twice(kfp_api, fast_backoff):
    kfp_api.run_outcomes = ["FAILED", "SUCCEEDED"]
    kfp_api.retry_faults = ["lost"]  # the run restarted, but the answer was a 504
    assert _submit(kfp_api, "--wait") == 0
    (run_id,) = kfp_api.runs
    assert len(_retries(kfp_api)) == 1 and kfp_api.runs[run_id]["attempt"] == 1


def test_the_watch_outlives_an_api_server_restart(kfp_api, fast_backoff, capsys):
    """503s, dropped connections (more than urllib3's own 3 retries) and proxy errors."""
    kfp_api.run_outcomes = ["FAILED", "SUCCEEDED"]
    kfp_api.watch_faults = [503, *["drop"] * 5, 502, 504, 503]
    assert _submit(kfp_api, "--wait") == 0
    (run_id,) = kfp_api.runs
    assert kfp_api.watch_faults == []  # every fault was served
    assert kfp_api.runs[run_id]["state"] == "SUCCEEDED"
    assert "reading again in" in capsys.readouterr().err


def test_the_watch_stops_on_a_refusal_and_at_the_deadline(kfp_api, fast_backoff):
    kfp_api.run_outcomes = ["SUCCEEDED"]
    assert _submit(kfp_api) == 0
    (run_id,) = kfp_api.runs
    backend = kfp_backend.connect(kfp_backend.ConnectOptions(host=kfp_api.url))
    kfp_api.watch_faults = [503] * 1000
    with pytest.raises(kfp_backend.SubmitError, match="gave up watching run .* deadline"):
        kfp_objects.wait_for_run(backend, run_id, timeout_s=0.3)
    kfp_api.watch_faults = []
    with pytest.raises(kfp_backend.SubmitError, match="HTTP 404"):
        kfp_objects.wait_for_run(backend, "no-such-run", timeout_s=60)


@pytest.mark.parametrize(
    "reason, expected",
    [
        (
            "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
            "the scheduler says: 0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        ),
        (None, "get events --field-selector reason=FailedScheduling"),  # KFP <= 2.17
    ],
    ids=["reason", "no-reason"],
)
def test_a_task_pending_too_long_ends_the_wait_with_the_reason(kfp_api, capsys, reason, expected):
    kfp_api.pending_task = ("train", reason)
    pending = ["--set", "pipeline.pending_timeout_seconds=1"]
    assert _submit(kfp_api, "--wait", *pending) == 2
    line = _error_line(capsys)
    (run_id,) = kfp_api.runs
    assert f"run {run_id}: task train has been Pending" in line and expected in line
    assert kfp_api.runs[run_id]["state"] == "RUNNING"  # left as it is, not canceled
    assert _retries(kfp_api) == []


def test_the_run_deadline_covers_every_attempt():
    p = Config().pipeline
    attempt = kfp_objects.attempt_seconds(p)
    assert attempt > p.train_timeout_seconds + 4 * p.step_timeout_seconds  # data steps too
    assert kfp_objects.run_deadline_seconds(p) == (p.run_retries + 1) * attempt
