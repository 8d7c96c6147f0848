"""`fauna compile`, `fauna submit` and `fauna schedule`: the pipeline on a Kubeflow cluster.

Credentials never travel in the pipeline: steps read them from Kubernetes Secrets
by reference, and nothing here puts a secret value into the compiled YAML or the
run's parameters. The backend is reached through `kfp_backend` (where, who, which
namespace, which version) and `kfp_objects` (experiments, pipeline versions, runs,
recurring runs); docs/cluster.md says which backend rules they follow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fauna.config import Config, PipelineConfig
from fauna.errors import FaunaError
from fauna.knobs import add_arguments as add_knob_arguments
from fauna.knobs import run_arguments, values_from_args, with_compiled_knobs
from fauna.pipelines import kfp_objects
from fauna.pipelines.kfp_backend import Backend, ConnectOptions, SubmitError, connect

__all__ = ["SubmitError", "compile_pipeline", "validate_cron", "submit", "schedule"]

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "fauna"
DEFAULT_SCHEDULE = "fauna-retraining"
# Set in an Istio-injected pod (the chart does): POSTed to when fauna is done.
SIDECAR_QUIT_ENV = "FAUNA_SIDECAR_QUIT_URL"
PIPELINE_DESCRIPTION = "Train and compare CNN backbones on animal photos; publish the best."

# KFP cron: six fields, seconds first (robfig/cron), e.g. "0 0 3 * * 0" = Sundays at 03:00.
_CRON_FIELDS = ("second", "minute", "hour", "day of month", "month", "day of week")
_CRON_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_CRON_NAMES = {
    4: "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split(),
    5: "SUN MON TUE WED THU FRI SAT".split(),
}
_CRON_MACROS = {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}


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


def check_cluster_source(cfg: Config, knobs: dict[str, Any] | None) -> None:
    """A pod cannot read a path on this machine: refuse before anything is uploaded."""
    from fauna.sources import source_kind

    source = (knobs or {}).get("source") or cfg.data.source
    if source_kind(source) == "local":
        raise FaunaError(
            f"a cluster run cannot read the local path {source!r}: upload it (e.g. to "
            f"s3://{cfg.pipeline.bucket}/datasets/<name>) and pass that as --source"
        )


def upload_version(cfg: Config, backend: Backend) -> kfp_objects.PipelineVersion:
    """Compile `cfg` and make sure the backend holds it as a pipeline version."""
    from fauna.pipelines.pipeline import PIPELINE_NAME

    with tempfile.TemporaryDirectory() as tmp:
        package = compile_pipeline(cfg, Path(tmp) / "fauna.yaml")
        revision = kfp_objects.source_revision(Path(__file__).resolve().parent)
        version = kfp_objects.ensure_pipeline_version(
            backend, package, PIPELINE_NAME, revision, PIPELINE_DESCRIPTION
        )
    state = "uploaded" if version.created else "already on the backend"
    log.info("pipeline %s, version %s (%s)", PIPELINE_NAME, version.name, state)
    return version


def follow(backend: Backend, run_id: str, retries: int, p: PipelineConfig) -> int:
    """Wait for the run; retry its failed tasks up to `retries` times; exit 0 on success.

    Each attempt is watched up to `kfp_objects.attempt_seconds` (the run's own
    deadline); a task Pending longer than pipeline.pending_timeout_seconds stops the
    watch with the scheduler's reason (exit 2) instead of waiting that deadline out.
    """
    log.info("waiting for run %s to finish ...", run_id)
    timeout, pending = kfp_objects.attempt_seconds(p), p.pending_timeout_seconds
    state = kfp_objects.wait_for_run(backend, run_id, timeout, pending)
    used = 0
    while state == "FAILED" and used < retries:
        used += 1
        log.warning(
            "run %s failed: retrying its failed tasks (%d of %d); finished tasks are kept "
            "and training resumes from its checkpoints",
            run_id,
            used,
            retries,
        )
        kfp_objects.retry_run(backend, run_id)
        state = kfp_objects.wait_for_run(backend, run_id, timeout, pending)
    note = f" after {used} retr{'y' if used == 1 else 'ies'}" if used else ""
    print(f"run {run_id} finished: {state}{note}")
    return 0 if state == "SUCCEEDED" else 1


def submit(
    cfg: Config,
    opts: ConnectOptions,
    experiment: str,
    run_name: str | None = None,
    wait: bool = False,
    retries: int = 0,
    retry_id: str | None = None,
    knobs: dict[str, Any] | None = None,
) -> int:
    """Run the pipeline (a version uploaded once), or retry a failed run; optionally follow it."""
    if not retry_id:
        check_cluster_source(cfg, knobs)
    backend = connect(opts)
    if retry_id:
        kfp_objects.retry_run(backend, retry_id)
        run_id = retry_id
        print(f"retrying run {run_id}: {backend.run_link(run_id)}")
    else:
        found = kfp_objects.ensure_experiment(backend, experiment)
        version = upload_version(cfg, backend)
        stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        run_id = kfp_objects.start_run(
            backend,
            found.experiment_id,
            run_name or f"fauna {version.name} {stamp}",
            version,
            run_arguments(cfg, **(knobs or {})),
        )
        print(f"submitted run {run_id}: {backend.run_link(run_id)}")
    if not wait:
        return 0
    return follow(backend, run_id, retries, cfg.pipeline)


def _print_or_delete(backend: Backend, experiment: str, delete: str | None) -> int:
    """`--list` and `--delete`: they look the experiment up and never create it."""
    found = kfp_objects.find_experiment(backend, experiment)
    existing = kfp_objects.recurring_runs(backend, found.experiment_id) if found else []
    if delete:
        doomed = [r for r in existing if r.display_name == delete]
        if not doomed:
            print(f"no recurring run {delete!r} in experiment {experiment!r}")
        for r in doomed:
            kfp_objects.delete_recurring_run(backend, r.recurring_run_id)
            print(f"deleted recurring run {delete!r} ({r.recurring_run_id})")
        return 0
    if not existing:
        print(f"no recurring runs in experiment {experiment!r}")
    for r in existing:
        cron = kfp_objects.schedule_of(r)["cron"] or "-"
        print(f"{r.display_name}\t{cron}\t{r.status}\t{r.recurring_run_id}")
    return 0


def _replace_schedule(
    backend: Backend,
    experiment_id: str,
    name: str,
    cron: str,
    version: kfp_objects.PipelineVersion,
    params: dict[str, Any],
) -> int:
    """Idempotent and atomic: an identical schedule stays; a new one exists before the old goes."""
    wanted = {
        "cron": cron,
        "version_id": version.version_id,
        "parameters": json.dumps(params, sort_keys=True),
        "max_concurrency": 1,
        "no_catchup": True,
        "enabled": True,
    }
    existing = [
        r for r in kfp_objects.recurring_runs(backend, experiment_id) if r.display_name == name
    ]
    same = [r for r in existing if kfp_objects.schedule_of(r) == wanted]
    if same:
        for r in existing:
            if r is not same[0]:
                kfp_objects.delete_recurring_run(backend, r.recurring_run_id)
        print(f"schedule {name!r} unchanged ({cron}, version {version.name})")
        return 0
    created = kfp_objects.create_recurring_run(backend, experiment_id, name, cron, version, params)
    for r in existing:
        try:
            kfp_objects.delete_recurring_run(backend, r.recurring_run_id)
        except SubmitError as exc:
            raise SubmitError(
                f"scheduled {name!r} as recurring run {created.recurring_run_id}, but the "
                f"previous one ({r.recurring_run_id}) is still there, delete it in the KFP UI: "
                f"{exc}"
            ) from None
    replaced = f", replacing {len(existing)}" if existing else ""
    print(
        f"scheduled {name!r} ({cron}, version {version.name}): "
        f"recurring run {created.recurring_run_id}{replaced}"
    )
    return 0


def schedule(
    cfg: Config,
    opts: ConnectOptions,
    experiment: str,
    name: str,
    cron: str | None,
    list_only: bool = False,
    delete: str | None = None,
    knobs: dict[str, Any] | None = None,
) -> int:
    """A KFP recurring run of the uploaded version (opt-in: the chart's CronJob is the default)."""
    if not (list_only or delete) and not cron:
        raise FaunaError("give --cron EXPR (or --list, or --delete NAME)")
    cron_text = validate_cron(cron) if cron else None
    if cron_text:
        check_cluster_source(cfg, knobs)
    backend = connect(opts)
    if list_only or delete:
        return _print_or_delete(backend, experiment, delete)
    assert cron_text is not None
    found = kfp_objects.ensure_experiment(backend, experiment)
    version = upload_version(cfg, backend)
    params = run_arguments(cfg, **(knobs or {}))
    return _replace_schedule(backend, found.experiment_id, name, cron_text, version, params)


@contextlib.contextmanager
def stop_sidecar_when_done():
    """Let an Istio-injected Job complete: its sidecar outlives fauna (istio/istio#11045).

    pilot-agent quits on `POST /quitquitquit` (port 15020, istio/istio#6324); the
    chart sets the URL only when it keeps the sidecar.
    """
    try:
        yield
    finally:
        url = os.environ.get(SIDECAR_QUIT_ENV)
        if url:
            try:
                request = urllib.request.Request(url, data=b"", method="POST")
                urllib.request.urlopen(request, timeout=5).close()
                log.info("stopped the sidecar (%s)", url)
            except (urllib.error.URLError, OSError) as exc:
                log.warning("could not stop the sidecar at %s: %s", url, exc)


def add_compile_arguments(parser: Any) -> None:
    parser.add_argument("--out", default="pipeline.yaml", help="where to write the YAML")


def _connection_args(parser: Any) -> None:
    group = parser.add_argument_group("Kubeflow Pipelines backend (>= 2.15)")
    group.add_argument("--host", help="KFP API or UI URL (default: $KF_PIPELINES_ENDPOINT)")
    group.add_argument(
        "--namespace",
        help="profile namespace on multi-user Kubeflow (default: $KF_PIPELINES_NAMESPACE, "
        "the pod's namespace in a cluster, else the kubeconfig context's)",
    )
    group.add_argument(
        "--token-file",
        metavar="PATH",
        help="bearer token, re-read per request (default: $KF_PIPELINES_SA_TOKEN_PATH); "
        "or set $KF_PIPELINES_TOKEN or $KF_PIPELINES_COOKIES",
    )
    group.add_argument(
        "--ui-url",
        metavar="URL",
        help="KFP UI for run links (default: $KF_PIPELINES_UI_ENDPOINT, else the host "
        "unless it is the API server's port 8888)",
    )
    group.add_argument(
        "--skip-version-check",
        action="store_true",
        help="go on when the backend is older than 2.15 or does not report its version",
    )
    group.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="experiment name")


def add_submit_arguments(parser: Any) -> None:
    _connection_args(parser)
    parser.add_argument("--run-name", help="display name of the run")
    parser.add_argument("--wait", action="store_true", help="follow the run; exit 1 if it fails")
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        help="with --wait: retry a failed run's failed tasks up to N times under the same "
        "run id (default: pipeline.run_retries)",
    )
    parser.add_argument(
        "--retry",
        metavar="RUN_ID",
        dest="retry_id",
        help="instead of a new run: re-run the failed tasks of this FAILED run",
    )
    parser.add_argument("--params", dest="config", help="alias of --config (params.yaml)")
    add_knob_arguments(parser)


def add_schedule_arguments(parser: Any) -> None:
    _connection_args(parser)
    parser.add_argument(
        "--cron", help="KFP cron, 6 fields with seconds first: '0 0 3 * * 0' = Sundays 03:00"
    )
    parser.add_argument(
        "--name", default=DEFAULT_SCHEDULE, help="schedule name; the same name replaces it"
    )
    parser.add_argument("--list", action="store_true", dest="list_only", help="list schedules")
    parser.add_argument("--delete", metavar="NAME", help="delete the schedule with this name")
    parser.add_argument("--params", dest="config", help="alias of --config (params.yaml)")
    add_knob_arguments(parser)


def _options(args: Any) -> ConnectOptions:
    return ConnectOptions(
        host=args.host,
        namespace=args.namespace,
        token_file=args.token_file,
        ui_url=args.ui_url,
        skip_version_check=args.skip_version_check,
    )


def run_compile(args: Any, cfg: Config) -> int:
    path = compile_pipeline(cfg, args.out)
    print(f"wrote {path}")
    return 0


def run_submit(args: Any, cfg: Config) -> int:
    retries = cfg.pipeline.run_retries if args.retries is None else args.retries
    if args.retries is not None and not args.wait:
        raise FaunaError("--retries needs --wait: only a submitter that follows the run retries it")
    if retries < 0:
        raise FaunaError(f"--retries must be 0 or more, got {retries}")
    with stop_sidecar_when_done():
        return submit(
            with_compiled_knobs(cfg, args),
            _options(args),
            args.experiment,
            run_name=args.run_name,
            wait=args.wait,
            retries=retries,
            retry_id=args.retry_id,
            knobs=values_from_args(args),
        )


def run_schedule(args: Any, cfg: Config) -> int:
    return schedule(
        with_compiled_knobs(cfg, args),
        _options(args),
        args.experiment,
        args.name,
        args.cron,
        list_only=args.list_only,
        delete=args.delete,
        knobs=values_from_args(args),
    )
