"""What fauna keeps on a KFP backend: experiments, pipeline versions, runs, recurring runs.

The backend's rules this follows (kubeflow/pipelines 2.15.0, mirrored by
tests/kfp_standin.py):

- Pipeline names are unique per namespace and version names unique per pipeline
  (backend/src/apiserver/model/pipeline.go `namespace_name`, pipeline_version.go
  `idx_pipelineid_name`); a duplicate is AlreadyExists, HTTP 409
  (storage/pipeline_store.go, server/pipeline_upload_server.go).
- `POST /apis/v2beta1/pipelines` creates a pipeline without a version
  (server/pipeline_server.go `CreatePipeline`); `upload_version` adds one.
- A run needs a display name (run_server.go `createRun`) and, in multi-user mode,
  an experiment (resource_manager.go `GetValidExperimentNamespacePair`).
- Only a run whose workflow is Failed/Error can be retried; the retry re-creates
  the failed and errored nodes under the same run id, keeps the succeeded ones and
  marks the run running before it answers (common/util/workflow.go
  `GenerateRetryExecution`, resource/resource_manager.go `RetryRun`).
- Recurring runs have no unique name (model/job.go); their ScheduledWorkflow gets a
  generated name (template/v2_template.go), so a new one can exist beside the old.
- `RetryRun` updates the run's workflow and, when the update fails, creates it
  (resource_manager.go, 2.15.0 lines 936-952): asked right after the run turned FAILED,
  while the workflow is still being updated, it answers HTTP 500 "already exists"
  (kubeflow/pipelines#13507; fix #13588 in no tag yet), and `CanRetry` answers 500 too.
  A retry is asked again, with backoff, while the run is still FAILED.
- A task's detail carries the Argo node's phase (PENDING for a pod not yet running) but,
  up to 2.17, no scheduler message (util/workflow.go `NodeStatuses`, server/api_converter.go
  `toApiPipelineTaskDetail` sets no `error` for a node): the reason is read when present.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fauna.pipelines.kfp_backend import Backend, SubmitError, api_call

log = logging.getLogger(__name__)

REVISION_ENV = "FAUNA_REVISION"  # the chart sets it; outside a git checkout there is no SHA
TERMINAL_STATES = ("SUCCEEDED", "FAILED", "SKIPPED", "CANCELED")
POLL_SECONDS = 10.0
# Answers worth asking again (None: no answer at all, a network error). A read: the
# server's or a proxy's errors and throttling. A retry also 409 and 500: the backend
# still settling the failed run (kubeflow/pipelines#13507).
WATCH_TRANSIENT = frozenset({None, 429, 500, 502, 503, 504})
RETRY_TRANSIENT = WATCH_TRANSIENT | {409}
WATCH_BACKOFF_MAX_SECONDS = 300.0  # between reads while the API is down; bounded by the deadline
RETRY_BACKOFF_SECONDS = (5.0, 10.0, 20.0, 40.0, 60.0, 60.0, 60.0, 60.0)  # 8 more tries, 5 min
# A run's critical path outside training: ingest, preprocess, split, augment,
# evaluate | t-SNE, compare, publish; each bounded by pipeline.step_timeout_seconds.
CRITICAL_PATH_STEPS = 7
ATTEMPT_SLACK_SECONDS = 3600  # pods scheduling and pulling images, a retry settling


@dataclass(frozen=True)
class PipelineVersion:
    pipeline_id: str
    version_id: str
    name: str
    created: bool


def _equals_filter(key: str, value: str) -> str:
    """A list filter on one column: `name` is unique (model/*.go `APIToModelFieldMap`)."""
    return json.dumps({"predicates": [{"operation": "EQUALS", "key": key, "stringValue": value}]})


def _find_named(what: str, list_call, items: str, name: str, key: str = "name", **scope):
    """The first listed object called `name` (by name or display name), or None."""
    page = api_call(
        f"finding the {what}", list_call, filter=_equals_filter(key, name), page_size=2, **scope
    )
    found = [
        o for o in getattr(page, items) or [] if name in (o.display_name, getattr(o, "name", None))
    ]
    return found[0] if found else None


def find_experiment(backend: Backend, name: str):
    """The experiment called `name` in the backend's namespace, or None (creates nothing)."""
    return _find_named(
        "experiment",
        backend.client.list_experiments,
        "experiments",
        name,
        key="display_name",
        namespace=backend.namespace,
    )


def ensure_experiment(backend: Backend, name: str):
    """The experiment called `name`, created when missing (a race with another creator is fine)."""
    from kfp_server_api import V2beta1Experiment

    experiment = find_experiment(backend, name)
    if experiment is not None:
        return experiment
    body = V2beta1Experiment(display_name=name, namespace=backend.namespace)
    try:
        return api_call(
            "creating the experiment",
            backend.client.experiments.experiment_service_create_experiment,
            experiment=body,
        )
    except SubmitError:
        experiment = find_experiment(backend, name)  # created meanwhile by someone else
        if experiment is None:
            raise
        return experiment


def source_revision(cwd: Path | None = None) -> str:
    """The git SHA the code comes from: $FAUNA_REVISION, else git (with -dirty), else 'nogit'."""
    if os.environ.get(REVISION_ENV):
        return os.environ[REVISION_ENV]

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
        return done.stdout.strip()

    try:
        sha = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "nogit"
    return sha + ("-dirty" if dirty else "")


def version_name(package: Path, revision: str) -> str:
    """`<git sha>-<hash of the compiled YAML>`: a different config never reuses a version.

    Lower-case letters, digits and '-' only, so it also suits the Kubernetes pipeline
    store, where versions are custom resources.
    """
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:10]
    rev = re.sub(r"[^a-z0-9-]+", "-", revision.lower()).strip("-")[:60] or "nogit"
    return f"{rev}-{digest}"


def _find_pipeline_id(backend: Backend, name: str) -> str | None:
    found = _find_named(
        "pipeline", backend.client.list_pipelines, "pipelines", name, namespace=backend.namespace
    )
    return found.pipeline_id if found else None


def _ensure_pipeline(backend: Backend, name: str, description: str) -> str:
    from kfp_server_api import V2beta1Pipeline

    pipeline_id = _find_pipeline_id(backend, name)
    if pipeline_id:
        return pipeline_id
    body = V2beta1Pipeline(
        name=name, display_name=name, description=description, namespace=backend.namespace
    )
    try:
        created = api_call(
            "creating the pipeline",
            backend.client.pipelines.pipeline_service_create_pipeline,
            pipeline=body,
        )
        return created.pipeline_id
    except SubmitError:
        pipeline_id = _find_pipeline_id(backend, name)  # a concurrent creator won: fine
        if not pipeline_id:
            raise
        return pipeline_id


def _find_version_id(backend: Backend, pipeline_id: str, name: str) -> str | None:
    found = _find_named(
        "pipeline version",
        backend.client.list_pipeline_versions,
        "pipeline_versions",
        name,
        pipeline_id=pipeline_id,
    )
    return found.pipeline_version_id if found else None


def ensure_pipeline_version(
    backend: Backend, package: Path, pipeline_name: str, revision: str, description: str
) -> PipelineVersion:
    """The pipeline and this package's version on the backend, uploaded only when missing."""
    name = version_name(package, revision)
    pipeline_id = _ensure_pipeline(backend, pipeline_name, description)
    version_id = _find_version_id(backend, pipeline_id, name)
    if version_id:
        return PipelineVersion(pipeline_id, version_id, name, created=False)
    try:
        uploaded = api_call(
            "uploading the pipeline version",
            backend.client.upload_pipeline_version,
            str(package),
            pipeline_version_name=name,
            pipeline_id=pipeline_id,
            description=f"fauna at {revision}",
        )
        return PipelineVersion(pipeline_id, uploaded.pipeline_version_id, name, created=True)
    except SubmitError:
        version_id = _find_version_id(backend, pipeline_id, name)  # uploaded meanwhile
        if not version_id:
            raise
        return PipelineVersion(pipeline_id, version_id, name, created=False)


def start_run(
    backend: Backend,
    experiment_id: str,
    run_name: str,
    version: PipelineVersion,
    params: dict[str, Any],
) -> str:
    """Create a run of the uploaded version; returns its id."""
    run = api_call(
        "creating the run",
        backend.client.run_pipeline,
        experiment_id=experiment_id,
        job_name=run_name,
        params=params,
        pipeline_id=version.pipeline_id,
        version_id=version.version_id,
    )
    return run.run_id


def attempt_seconds(p) -> int:
    """The longest one attempt of a run may take: the critical path's timeouts, and slack."""
    steps = CRITICAL_PATH_STEPS * p.step_timeout_seconds
    return p.train_timeout_seconds + steps + ATTEMPT_SLACK_SECONDS


def run_deadline_seconds(p) -> int:
    """A run and all its retries (pipeline.run_retries): what the CronJob must allow.

    The chart derives its Job's activeDeadlineSeconds with the same formula
    (charts/fauna/templates/_helpers.tpl `fauna.activeDeadlineSeconds`).
    """
    return (p.run_retries + 1) * attempt_seconds(p)


class TaskPendingError(SubmitError):
    """A task's pod stayed Pending too long: it would never fail, so the watch stops."""


def run_state(backend: Backend, run_id: str) -> str:
    return _state(api_call("reading the run", backend.client.get_run, run_id))


def _state(run) -> str:
    return str(run.state or "RUNTIME_STATE_UNSPECIFIED").upper()


def _transient(exc: SubmitError, statuses: frozenset) -> bool:
    return getattr(exc, "status", None) in statuses


def wait_for_run(backend: Backend, run_id: str, timeout_s: float, pending_s: float = 0.0) -> str:
    """Poll until the run ends; its final state. (kfp's own wait misses CANCELED.)

    A transient API or network error (the API server restarting, a proxy's 503) is
    waited out with backoff, up to the deadline; a refusal (404, 403) ends the watch.
    A task Pending longer than `pending_s` (> 0) ends it too, with the reason.
    """
    deadline = time.monotonic() + timeout_s
    pending = _PendingWatch(backend, run_id, pending_s)
    failures = 0
    while True:
        try:
            run = api_call("reading the run", backend.client.get_run, run_id)
            failures = 0
        except SubmitError as exc:
            if not _transient(exc, WATCH_TRANSIENT):
                raise
            failures += 1
            pause = min(POLL_SECONDS * 2**failures, WATCH_BACKOFF_MAX_SECONDS)
            if time.monotonic() + pause > deadline:
                raise SubmitError(f"gave up watching run {run_id} at its deadline: {exc}") from None
            log.warning("watching run %s: %s; reading again in %.0f s", run_id, exc, pause)
            time.sleep(pause)
            continue
        state = _state(run)
        if state in TERMINAL_STATES:
            return state
        pending.check(run)
        if time.monotonic() > deadline:
            raise SubmitError(f"run {run_id} still {state} after {timeout_s:.0f} s")
        time.sleep(POLL_SECONDS)


class _PendingWatch:
    """Since when each task has been Pending (as this watcher saw it; no clock skew)."""

    def __init__(self, backend: Backend, run_id: str, limit_s: float):
        self.backend, self.run_id, self.limit_s = backend, run_id, limit_s
        self.since: dict[str, float] = {}

    def check(self, run) -> None:
        if self.limit_s <= 0:
            return
        details = getattr(run, "run_details", None)
        tasks = [t for t in (getattr(details, "task_details", None) or []) if t.state]
        pending = {(t.task_id or t.display_name): t for t in tasks if t.state.upper() == "PENDING"}
        now = time.monotonic()
        self.since = {key: self.since.get(key, now) for key in pending}
        for key, task in pending.items():
            if now - self.since[key] >= self.limit_s:
                raise TaskPendingError(self._message(task, now - self.since[key]))

    def _message(self, task, waited: float) -> str:
        reason = _task_reason(task)
        namespace = self.backend.namespace or "kubeflow"
        where = (
            f"the scheduler says: {reason}"
            if reason
            else "the backend does not report why: "
            f"kubectl -n {namespace} get events --field-selector reason=FailedScheduling"
        )
        return (
            f"run {self.run_id}: task {task.display_name or task.task_id} has been Pending "
            f"for {waited / 60:.0f} min ({where}); a Pending pod never fails, so fauna stops "
            "waiting and leaves the run as it is: check the GPU nodes (pipeline."
            "gpu_node_selector, gpu_toleration_key), quotas and image pull secrets "
            "(docs/cluster.md), then terminate or retry the run"
        )


def _task_reason(task) -> str:
    """The scheduler's message where the backend passes it on (error, or state history)."""
    statuses = [task] + list(reversed(getattr(task, "state_history", None) or []))
    for status in statuses:
        error = getattr(status, "error", None)
        if error is not None and getattr(error, "message", None):
            return " ".join(str(error.message).split())[:300]
    return ""


def retry_run(backend: Backend, run_id: str) -> None:
    """Re-run the failed tasks of a FAILED run, under the same run id.

    Tasks that succeeded are kept; a retried train task finds its run-scoped
    checkpoints and resumes from the last finished epoch. The backend may refuse a
    retry asked while it still settles the failed run (HTTP 500 "already exists",
    kubeflow/pipelines#13507): asked again with backoff while the run is still FAILED;
    a run found no longer FAILED means an earlier answer was lost but the retry held.
    """
    state = run_state(backend, run_id)
    if state != "FAILED":
        raise SubmitError(f"run {run_id} is {state}: only a FAILED run can be retried")
    for pause in (*RETRY_BACKOFF_SECONDS, None):
        try:
            api_call("retrying the run", backend.client.runs.run_service_retry_run, run_id=run_id)
            return
        except SubmitError as exc:
            if pause is None or not _transient(exc, RETRY_TRANSIENT):
                raise
            log.warning("run %s: %s; asking again in %.0f s", run_id, exc, pause)
        time.sleep(pause)
        try:
            state = run_state(backend, run_id)
        except SubmitError as exc:
            if not _transient(exc, WATCH_TRANSIENT):
                raise
            continue
        if state != "FAILED":
            log.info("run %s is %s: the retry took effect", run_id, state)
            return


def recurring_runs(backend: Backend, experiment_id: str) -> list:
    runs, token = [], ""
    while True:
        page = api_call(
            "listing recurring runs",
            backend.client.list_recurring_runs,
            experiment_id=experiment_id,
            page_size=100,
            page_token=token,
        )
        runs.extend(page.recurring_runs or [])
        token = page.next_page_token
        if not token:
            return runs


def schedule_of(run) -> dict[str, Any]:
    """What makes two recurring runs the same schedule (names and ids aside)."""
    trigger = run.trigger.cron_schedule.cron if run.trigger and run.trigger.cron_schedule else None
    reference = run.pipeline_version_reference
    parameters = run.runtime_config.parameters if run.runtime_config else None
    return {
        "cron": trigger,
        "version_id": reference.pipeline_version_id if reference else None,
        "parameters": json.dumps(parameters or {}, sort_keys=True),
        "max_concurrency": int(run.max_concurrency or 0),
        "no_catchup": bool(run.no_catchup),
        "enabled": str(run.status or "").upper() != "DISABLED",
    }


def create_recurring_run(
    backend: Backend,
    experiment_id: str,
    name: str,
    cron: str,
    version: PipelineVersion,
    params: dict[str, Any],
):
    return api_call(
        "creating the recurring run",
        backend.client.create_recurring_run,
        experiment_id=experiment_id,
        job_name=name,
        description="fauna scheduled retraining: publish promotes only a better model",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=version.pipeline_id,
        version_id=version.version_id,
        enabled=True,
    )


def delete_recurring_run(backend: Backend, recurring_run_id: str) -> None:
    api_call("deleting the recurring run", backend.client.delete_recurring_run, recurring_run_id)
