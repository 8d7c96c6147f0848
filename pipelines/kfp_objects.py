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


def run_state(backend: Backend, run_id: str) -> str:
    run = api_call("reading the run", backend.client.get_run, run_id)
    return str(run.state or "RUNTIME_STATE_UNSPECIFIED").upper()


def wait_for_run(backend: Backend, run_id: str, timeout_s: float) -> str:
    """Poll until the run ends; its final state. (kfp's own wait misses CANCELED.)"""
    deadline = time.monotonic() + timeout_s
    while True:
        state = run_state(backend, run_id)
        if state in TERMINAL_STATES:
            return state
        if time.monotonic() > deadline:
            raise SubmitError(f"run {run_id} still {state} after {timeout_s:.0f} s")
        time.sleep(POLL_SECONDS)


def retry_run(backend: Backend, run_id: str) -> None:
    """Re-run the failed tasks of a FAILED run, under the same run id.

    Tasks that succeeded are kept; a retried train task finds its run-scoped
    checkpoints and resumes from the last finished epoch.
    """
    state = run_state(backend, run_id)
    if state != "FAILED":
        raise SubmitError(f"run {run_id} is {state}: only a FAILED run can be retried")
    api_call("retrying the run", backend.client.runs.run_service_retry_run, run_id=run_id)


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
