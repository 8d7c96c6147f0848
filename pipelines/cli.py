"""`fauna compile`, `fauna submit` and `fauna schedule`: the pipeline on a Kubeflow cluster.

Credentials never travel in the pipeline: steps read them from Kubernetes Secrets
by reference, and nothing here puts a secret value into the compiled YAML or the
run's parameters.
"""

from __future__ import annotations

import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any

from fauna.config import Config
from fauna.errors import FaunaError

DEFAULT_EXPERIMENT = "fauna"
DEFAULT_SCHEDULE = "fauna-retraining"
WAIT_TIMEOUT_SECONDS = 7 * 24 * 3600

# KFP cron: six fields, seconds first (robfig/cron), e.g. "0 0 3 * * 0" = Sundays at 03:00.
_CRON_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_NAMES = {
    4: "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(),
    5: "SUN MON TUE WED THU FRI SAT".split(),
}
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


class SubmitError(FaunaError):
    """The cluster could not be reached or refused the request."""


def compile_pipeline(cfg: Config, out: str | Path) -> Path:
    """Write the pipeline YAML; the same config always gives the same bytes."""
    from kfp import compiler

    from fauna.pipelines.pipeline import build_pipeline

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compiler.Compiler().compile(build_pipeline(cfg), package_path=str(out))
    check_compiled(out)
    return out


def check_compiled(path: Path) -> None:
    """Refuse a compiled pipeline the real KFP backend would run wrongly (see conformance)."""
    import yaml

    from fauna.pipelines.conformance import backend_conformance_problems

    problems = [
        p
        for doc in yaml.safe_load_all(path.read_text())
        if doc
        for p in backend_conformance_problems(doc)
    ]
    if problems:
        path.unlink()
        raise FaunaError(f"{path} would break on a KFP backend: {problems[0]}")


def validate_cron(expr: str) -> str:
    """Check a KFP cron expression (6 fields, seconds first) and explain what is wrong."""
    text = " ".join(expr.split())
    if text in _CRON_MACROS or text.startswith("@every "):
        return text
    fields = text.split(" ")
    if len(fields) != 6:
        hint = " (looks like a 5-field Unix cron: prepend the seconds, e.g. '0 " + text + "')"
        raise FaunaError(
            f"cron expression {expr!r} has {len(fields)} field(s); KFP needs 6, seconds first: "
            "'second minute hour day-of-month month day-of-week', e.g. '0 0 3 * * 0'"
            + (hint if len(fields) == 5 else "")
        )
    for i, (field, name, (low, high)) in enumerate(
        zip(fields, _CRON_FIELDS, _CRON_RANGES, strict=True)
    ):
        if field == "?" and i in (3, 5):
            continue
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not step.isdigit():
                raise FaunaError(f"cron {name} field {field!r}: step {step!r} is not a number")
            if base == "*":
                continue
            for bound in base.split("-", 1):
                value = _cron_value(bound, i)
                if value is None or not low <= value <= high:
                    raise FaunaError(
                        f"cron {name} field {field!r}: {bound!r} is not in {low}-{high}"
                    )
    return text


def _cron_value(token: str, index: int) -> int | None:
    if token.isdigit():
        return int(token)
    names = _CRON_NAMES.get(index, [])
    if token.upper() in names:
        return names.index(token.upper()) + (1 if index == 4 else 0)
    return None


def resolve_host(host: str | None) -> str:
    host = host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if not host:
        raise FaunaError("no Kubeflow Pipelines host: pass --host URL or set KF_PIPELINES_ENDPOINT")
    return host.rstrip("/")


def connect(host: str):
    """A kfp.Client, after a quick reachability check (kfp itself retries for ~25 s)."""
    try:
        with urllib.request.urlopen(f"{host}/apis/v2beta1/healthz", timeout=10) as resp:
            resp.read()
    except urllib.error.HTTPError:
        pass  # reachable; auth or proxies may answer differently, kfp will tell
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise SubmitError(f"cannot reach Kubeflow Pipelines at {host}: {reason}") from None
    import kfp
    from kfp.client import ServiceAccountTokenVolumeCredentials

    # In-cluster on multi-user Kubeflow (the chart's CronJob), authenticate with the
    # projected service-account token; elsewhere no credentials are needed.
    token = os.environ.get("KF_PIPELINES_SA_TOKEN_PATH")
    credentials = (
        ServiceAccountTokenVolumeCredentials(token) if token and Path(token).is_file() else None
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return kfp.Client(host=host, credentials=credentials)


def _api_call(what: str, fn, *args, **kwargs):
    """Turn kfp's API exceptions into one line."""
    from kfp_server_api.exceptions import ApiException

    try:
        return fn(*args, **kwargs)
    except ApiException as exc:
        raise SubmitError(f"{what} failed: HTTP {exc.status} {exc.reason}") from None
    except (OSError, TimeoutError) as exc:
        raise SubmitError(f"{what} failed: {exc}") from None


def pipeline_arguments(cfg: Config, **knobs: Any) -> dict[str, Any]:
    """Run parameters: the typed knobs of `fauna.pipelines.pipeline.RUN_KNOBS`."""
    from fauna.pipelines.pipeline import run_arguments

    return run_arguments(cfg, **knobs)


def submit(cfg: Config, host: str | None, experiment: str, run_name: str | None, wait: bool) -> int:
    host = resolve_host(host)
    client = connect(host)
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "fauna.yaml")
        result = _api_call(
            "creating the run",
            client.create_run_from_pipeline_package,
            str(package),
            arguments=pipeline_arguments(cfg),
            run_name=run_name,
            experiment_name=experiment,
        )
    run_id = result.run_id
    print(f"submitted run {run_id}: {host}/#/runs/details/{run_id}")
    if not wait:
        return 0
    print("waiting for the run to finish ...", file=sys.stderr)
    run = _api_call(
        "waiting for the run", client.wait_for_run_completion, run_id, WAIT_TIMEOUT_SECONDS, 10
    )
    state = (run.state or "UNKNOWN").upper()
    print(f"run {run_id} finished: {state}")
    return 0 if state == "SUCCEEDED" else 1


def _find_experiment_id(client, name: str) -> str:
    experiment = _api_call("finding the experiment", client.create_experiment, name=name)
    return experiment.experiment_id


def _recurring_runs(client, experiment_id: str) -> list:
    runs, token = [], ""
    while True:
        page = _api_call(
            "listing recurring runs",
            client.list_recurring_runs,
            experiment_id=experiment_id,
            page_size=100,
            page_token=token,
        )
        runs.extend(page.recurring_runs or [])
        token = page.next_page_token
        if not token:
            return runs


def schedule(
    cfg: Config,
    host: str | None,
    experiment: str,
    name: str,
    cron: str | None,
    list_only: bool,
    delete: str | None,
) -> int:
    if not (list_only or delete) and not cron:
        raise FaunaError("give --cron EXPR (or --list, or --delete NAME)")
    cron_text = validate_cron(cron) if cron else None
    client = connect(resolve_host(host))
    experiment_id = _find_experiment_id(client, experiment)
    existing = _recurring_runs(client, experiment_id)
    if list_only:
        if not existing:
            print(f"no recurring runs in experiment {experiment!r}")
        for r in existing:
            trigger = r.trigger.cron_schedule.cron if r.trigger and r.trigger.cron_schedule else "-"
            print(f"{r.display_name}\t{trigger}\t{r.status}\t{r.recurring_run_id}")
        return 0
    target = delete or name
    for r in existing:
        if r.display_name == target:
            _api_call("deleting the recurring run", client.delete_recurring_run, r.recurring_run_id)
            print(f"deleted recurring run {target!r} ({r.recurring_run_id})")
    if delete:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "fauna.yaml")
        created = _api_call(
            "creating the recurring run",
            client.create_recurring_run,
            experiment_id=experiment_id,
            job_name=name,
            description="fauna scheduled retraining: publish promotes only a better model",
            cron_expression=cron_text,
            max_concurrency=1,
            no_catchup=True,
            params=pipeline_arguments(cfg),
            pipeline_package_path=str(package),
            enabled=True,
        )
    print(f"scheduled {name!r} ({cron_text}): recurring run {created.recurring_run_id}")
    return 0


def add_compile_arguments(parser: Any) -> None:
    parser.add_argument("--out", default="pipeline.yaml", help="where to write the YAML")


def add_submit_arguments(parser: Any) -> None:
    _host_args(parser)
    parser.add_argument("--run-name", help="display name of the run")
    parser.add_argument("--wait", action="store_true", help="follow the run; exit 1 if it fails")
    parser.add_argument("--params", dest="config", help="alias of --config (params.yaml)")


def add_schedule_arguments(parser: Any) -> None:
    _host_args(parser)
    parser.add_argument(
        "--cron", help="KFP cron, 6 fields with seconds first: '0 0 3 * * 0' = Sundays 03:00"
    )
    parser.add_argument(
        "--name", default=DEFAULT_SCHEDULE, help="schedule name; the same name replaces it"
    )
    parser.add_argument("--list", action="store_true", dest="list_only", help="list schedules")
    parser.add_argument("--delete", metavar="NAME", help="delete the schedule with this name")
    parser.add_argument("--params", dest="config", help="alias of --config (params.yaml)")


def _host_args(parser: Any) -> None:
    parser.add_argument("--host", help="KFP API URL (default: $KF_PIPELINES_ENDPOINT)")
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment name")


def run_compile(args: Any, cfg: Config) -> int:
    path = compile_pipeline(cfg, args.out)
    print(f"wrote {path}")
    return 0


def run_submit(args: Any, cfg: Config) -> int:
    return submit(cfg, args.host, args.experiment, args.run_name, args.wait)


def run_schedule(args: Any, cfg: Config) -> int:
    return schedule(
        cfg, args.host, args.experiment, args.name, args.cron, args.list_only, args.delete
    )
