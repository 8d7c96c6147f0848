"""`fauna local-run` on Docker: every task of the pipeline inside the image of this checkout.

kfp.local's DockerRunner starts one container per task from the image the task names,
with the same `command`/`args` a cluster's launcher would run, and passes artifacts
between them through a pipeline root on the host (bind-mounted at the same path).
Three things it does not do for us, done here:

- `entrypoint=[]`: the image's `ENTRYPOINT ["fauna"]` would swallow the launcher's `sh -c`;
- `user=<your uid>:0`: the containers must write the host's pipeline root, and group 0
  owns the image's writable paths (as on clusters that run images with a random uid);
- kfp.local logs SUCCESS even when a container wrote nothing (an auto-removed container
  reads as exit 0), so every task's executor output and artifacts are checked here.

Publishing goes to the S3 endpoint of the caller (the embedded server of `local-run`),
reached from the containers through host networking.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import Any

from fauna.config import Config
from fauna.contracts import PublishResult
from fauna.errors import FaunaError
from fauna.sources import secret_env_keys

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
# What the tasks get from this environment: the S3 endpoint and credentials (publish,
# checkpoints), Kaggle credentials (ingest) and the log level; nothing else leaks in.
PASSED_ENV = (
    "S3_ENDPOINT_URL",
    "MODEL_REGISTRY_URL",  # optional: publish registers the run there (fauna.store.registry)
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    *secret_env_keys(),
    "TF_CPP_MIN_LOG_LEVEL",
)
EXECUTOR_OUTPUT = "executor_output.json"  # what kfp.local asks each task to write
# Artifact types that live in their metadata alone (no file at their URI).
METADATA_ONLY = {
    "system.Metrics",
    "system.ClassificationMetrics",
    "system.SlicedClassificationMetrics",
}


class DockerRunError(FaunaError):
    """The Docker route could not build, start or verify a task."""


def docker_answers() -> bool:
    """Whether a Docker engine answers the Docker SDK (what kfp.local's DockerRunner uses)."""
    try:
        import docker

        client = docker.from_env(timeout=20)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # no SDK, no socket, no permission: all mean "no engine for us"
        return False


def build_image() -> str:
    """Build the CPU image of this checkout (`make image-cpu`); returns its reference."""
    if not (ROOT / "mk" / "cluster.mk").is_file() or not shutil.which("make"):
        raise DockerRunError(
            f"the Docker route builds the image from a checkout with make; {ROOT} is not one"
        )
    make = ["make", "--no-print-directory", "-C", str(ROOT), "-f", "mk/cluster.mk"]
    ref = subprocess.run(
        [*make, "-s", "image-ref-cpu"], capture_output=True, text=True, check=True
    ).stdout.strip()
    log.info("image: building %s (make image-cpu)", ref)
    done = subprocess.run([*make, "image-cpu", f"TAG={ref.rsplit(':', 1)[1]}"], check=False)
    if done.returncode != 0:
        raise DockerRunError(f"building {ref} failed (make image-cpu exited {done.returncode})")
    return ref


def task_environment() -> dict[str, str]:
    return {key: os.environ[key] for key in PASSED_ENV if os.environ.get(key)}


def source_mounts(arguments: dict[str, Any]) -> list[Any]:
    """A local data source (folder or archive), mounted read-only at the same path."""
    from docker.types import Mount

    source = arguments.get("source") or ""
    if "://" in source or source.startswith("kaggle:") or not Path(source).exists():
        return []
    path = str(Path(source).resolve())
    arguments["source"] = path
    return [Mount(target=path, source=path, type="bind", read_only=True)]


def docker_runner(arguments: dict[str, Any]) -> Any:
    """kfp.local's DockerRunner as the image needs it (see the module docstring)."""
    from kfp import local

    return local.DockerRunner(
        network_mode="host",  # the S3 endpoint of the caller (127.0.0.1) is the containers' too
        entrypoint=[],
        user=f"{os.getuid()}:0",
        environment=task_environment(),
        mounts=source_mounts(arguments),
    )


def run_pipeline_in_docker(
    cfg: Config, arguments: dict[str, Any], run_dir: Path, image: str | None = None
) -> dict[str, Any]:
    """Run the pipeline with every task in `image` (built now when None); returns publish.json.

    The same contract as `local.run_pipeline_locally`: publish.json of the run plus
    `local_dir`, the publish task's output folder.
    """
    from google.protobuf import json_format
    from kfp import local

    from fauna.pipelines.pipeline import build_pipeline

    try:
        import docker  # noqa: F401 (kfp.local's DockerRunner drives the engine through it)
    except ImportError:
        raise DockerRunError(
            "the Docker route needs the docker package: pip install docker"
        ) from None
    if not docker_answers():
        raise DockerRunError("BACKEND=docker but no Docker engine answers (start dockerd)")
    image = image or build_image()
    cfg = cfg.merged({"pipeline": {"image_cpu": image, "image_gpu": image, "use_gpu": False}})
    arguments = dict(arguments)
    pipeline_root = (run_dir / "kfp").resolve()
    pipeline_root.mkdir(parents=True, exist_ok=True)
    local.init(
        runner=docker_runner(arguments), pipeline_root=str(pipeline_root), raise_on_error=True
    )
    pipeline = build_pipeline(cfg)
    # kfp.local swaps builtins.print per task to indent logs; parallel tasks can leave it swapped.
    original_print = builtins.print
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            # Resources and placement are for clusters; kfp.local warns once per task.
            warnings.filterwarnings("ignore", message=".*no effect in the current local runner.*")
            task = pipeline(**arguments)
    except RuntimeError as error:  # kfp.local: "Task ... finished with status FAILURE"
        raise DockerRunError(f"{error} (image {image}; its log is above)") from None
    finally:
        builtins.print = original_print
    spec = json_format.MessageToDict(pipeline.pipeline_spec)
    verify_task_outputs(pipeline_root, spec, expected_tasks(spec, arguments))
    published = Path(task.output.path)
    return PublishResult.read(published).to_json() | {"local_dir": str(published)}


def expected_tasks(spec: dict[str, Any], arguments: dict[str, Any], dag: dict | None = None) -> int:
    """How many container tasks the run has: loop bodies count once per loop item."""
    dag = spec["root"]["dag"] if dag is None else dag
    count = 0
    for task in dag["tasks"].values():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" not in component:
            count += 1
            continue
        iterations = 1
        if "parameterIterator" in task:
            items = task["parameterIterator"]["items"]
            if "raw" in items:
                iterations = len(json.loads(items["raw"]))
            else:
                feed = task["inputs"]["parameters"][items["inputParameter"]]
                iterations = len(arguments[feed["componentInputParameter"]])
        count += iterations * expected_tasks(spec, arguments, component["dag"])
    return count


def verify_task_outputs(pipeline_root: Path, spec: dict[str, Any], expected: int) -> None:
    """`expected` tasks wrote their executor output, and every artifact they list exists."""
    runs = sorted(p for p in pipeline_root.iterdir() if p.is_dir())
    if not runs:
        raise DockerRunError(f"no task wrote anything under {pipeline_root}")
    run_root = runs[-1]  # kfp.local names runs <pipeline>-<timestamp>
    task_roots = sorted(p.parent for p in run_root.rglob(EXECUTOR_OUTPUT))
    problems = [] if len(task_roots) == expected else [
        f"{expected} tasks ran but only {len(task_roots)} wrote {EXECUTOR_OUTPUT} "
        f"({', '.join(str(p.relative_to(run_root)) for p in task_roots)})"
    ]  # fmt: skip
    for task_root in task_roots:
        problems += artifact_problems(task_root, spec)
    if problems:
        raise DockerRunError("kfp.local reported success, but " + "; ".join(problems))
    log.info("verified the outputs of %d tasks under %s", len(task_roots), run_root)


def artifact_problems(task_root: Path, spec: dict[str, Any]) -> list[str]:
    """This task's output artifacts that are missing: no files, or (metrics) no values."""
    # kfp.local names a task's folder after its component (comp-train -> train).
    component = spec["components"].get(f"comp-{task_root.name}", {})
    outputs = component.get("outputDefinitions", {}).get("artifacts", {})
    written = json.loads((task_root / EXECUTOR_OUTPUT).read_text())
    problems = []
    for name, listed in written.get("artifacts", {}).items():
        schema = outputs.get(name, {}).get("artifactType", {}).get("schemaTitle", "")
        for artifact in listed.get("artifacts", []):
            path = Path(artifact["uri"])
            if schema in METADATA_ONLY:
                ok = bool(artifact.get("metadata"))
            else:
                ok = path.is_file() or (path.is_dir() and any(path.iterdir()))
            if not ok:
                problems.append(f"{task_root.name}.{name} ({path}) is missing or empty")
    return problems
