"""`fauna local-run` (`make local-run`): the whole pipeline on this machine.

Backends:
- embedded (default without Docker): the same pipeline function under
  `kfp.local.SubprocessRunner(use_venv=False)`, with this environment's Python;
  publishing goes to `S3_ENDPOINT_URL` when set (a real MinIO), otherwise to an
  S3 server embedded for the run (moto). The embedded bucket is saved under
  runs/embedded-s3/ and restored next time, so the champion carries over.
- docker: every task a container of this checkout's CPU image (`local_docker`).
- kind: a kind cluster with KFP + MinIO (scripts/kind-local-run.sh).

Without BACKEND a route is chosen only when all its prerequisites hold (both container
routes build an image, so both need a Docker engine and a BuildKit-capable CLI, checked
by scripts/docker-buildkit-check.sh before choosing), else the embedded one; the choice
and why are logged in one line. Progress goes through logging; the summary is printed.
"""

from __future__ import annotations

import builtins
import json
import logging
import os
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fauna import knobs, timing
from fauna.config import PAPER_CLASSES, Config
from fauna.contracts import COMPARISON, REPORT_DIR, REPORT_HTML, PublishResult
from fauna.errors import FaunaError
from fauna.model.artifact import MODEL_FILE
from fauna.score.metrics import metric_spec
from fauna.sources import kaggle_credentials_found
from fauna.store import storage

log = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
EMBEDDED_S3_DIR = RUNS_DIR / "embedded-s3"
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
KIND_SCRIPT = SCRIPTS / "kind-local-run.sh"
BUILDKIT_CHECK = SCRIPTS / "docker-buildkit-check.sh"
BACKENDS = ("embedded", "docker", "kind")
SAMPLE_PER_CLASS = 24


def docker_problem() -> str | None:
    """Why an image cannot be built here (None: it can): no docker CLI, no engine that
    answers, or no BuildKit (the check `make image-cpu` runs first, in one line)."""
    if not shutil.which("docker"):
        return "docker is not installed"
    try:
        done = subprocess.run(
            ["bash", str(BUILDKIT_CHECK)], capture_output=True, text=True, timeout=60, check=False
        )
    except subprocess.TimeoutExpired:
        return "`docker version` did not answer within 60 s"
    except FileNotFoundError:
        return "bash is not installed (the BuildKit check is a bash script)"
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines() or [f"the BuildKit check exited {done.returncode}"]
    return lines[-1].removeprefix("image: ")


def choose_backend(requested: str | None) -> tuple[str, str]:
    """(backend, why): kind where Docker (with BuildKit) and kind work, docker where only
    Docker does, else embedded. An explicit docker request that cannot work fails here."""
    if requested and requested not in BACKENDS:
        raise FaunaError(f"BACKEND must be embedded, docker or kind, got {requested!r}")
    if requested == "docker":
        problem = docker_problem()
        if problem:
            raise FaunaError(f"BACKEND=docker cannot run here: {problem}")
    if requested:
        return requested, "requested with BACKEND"
    problem = docker_problem()
    if problem:
        return "embedded", problem
    if not shutil.which("kind"):
        return "docker", "a Docker engine answers and the CLI builds with BuildKit; no kind"
    return "kind", "Docker (with BuildKit) and kind are available"


def choose_data(data: str | None, cfg: Config, run_dir: Path) -> tuple[str, str]:
    """(source, description): DATA, else Kaggle with credentials, else a generated sample."""
    if data:
        return data, f"your data: {data}"
    if kaggle_credentials_found():
        return cfg.data.source, f"the Kaggle dataset {cfg.data.source}"
    from fauna.data.synthetic import generate

    sample = run_dir / "sample-data"
    generate(sample, per_class=SAMPLE_PER_CLASS, size_range=(96, 144), seed=cfg.split.seed)
    return str(sample.resolve()), (
        f"a GENERATED sample ({SAMPLE_PER_CLASS} images x {len(PAPER_CLASSES)} classes of "
        "coloured patterns, not animals): no Kaggle credentials and no DATA given"
    )


@contextmanager
def s3_endpoint(bucket: str):
    """Yield (endpoint, embedded?): the configured S3/MinIO, or an embedded server for the run."""
    if os.environ.get("S3_ENDPOINT_URL"):
        storage.ensure_bucket(bucket)
        yield os.environ["S3_ENDPOINT_URL"], False
        return
    from fauna.store.embedded_s3 import embedded_s3_server

    with embedded_s3_server() as endpoint, _environment(S3_ENDPOINT_URL=endpoint):
        # The embedded server accepts any credentials; only fill in what is missing.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "embedded")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "embedded")
        storage.ensure_bucket(bucket)
        saved_bucket = EMBEDDED_S3_DIR / bucket
        if saved_bucket.is_dir() and any(saved_bucket.iterdir()):
            storage.upload_dir(saved_bucket, f"s3://{bucket}")
        yield endpoint, True
        # Training checkpoints are for resuming a killed run; do not keep them on disk.
        storage.delete_prefix(f"s3://{bucket}/checkpoints")
        if saved_bucket.exists():
            shutil.rmtree(saved_bucket)
        storage.download_dir(f"s3://{bucket}", saved_bucket)


@contextmanager
def _environment(**values: str):
    """Set environment variables for a while; the previous values (or absence) come back."""
    keys = {*values, "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def registry_line(cfg: Config) -> str:
    """Where publish registers the run: MODEL_REGISTRY_URL reaches its task by inheritance
    (kfp.local's subprocesses, local_docker's forwarded variables), model_registry.url as
    the compiled pipeline's variable for publish."""
    from fauna.store.registry import URL_ENV, registry_url

    url = registry_url(cfg)
    return url if url else f"off (set {URL_ENV} or model_registry.url to register the run)"


def run_pipeline_locally(
    cfg: Config, arguments: dict[str, Any], run_dir: Path, *, mirror_checkpoints: bool = True
) -> dict[str, Any]:
    """Run the pipeline under kfp.local with these run parameters; returns publish.json.

    mirror_checkpoints=False: train keeps its per-epoch checkpoints on local disk only (the
    embedded S3 server dies with the run, so a mirror there could never resume anything;
    the uploads cost about 6% of the smoke run's training CPU, docs/performance.md)."""
    from kfp import local

    from fauna.pipelines.pipeline import build_pipeline

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir / "kfp"),
        raise_on_error=True,
    )
    pipeline = build_pipeline(cfg, mirror_checkpoints=mirror_checkpoints)
    # kfp.local indents task logs by swapping builtins.print per task; with tasks running in
    # parallel the swaps interleave and can leave print indented for good. Put it back.
    original_print = builtins.print
    try:
        with warnings.catch_warnings():
            # kfp.local warns that the images are not Python images: it runs this venv's Python.
            warnings.filterwarnings("ignore", message=".*non-Python base image.*")
            task = pipeline(**arguments)
    finally:
        builtins.print = original_print
    published = Path(task.output.path)
    return PublishResult.read(published).to_json() | {"local_dir": str(published)}


def verify_published(result: dict[str, Any]) -> None:
    """Do not trust the reported status alone: check the objects are really in the bucket."""
    missing = [
        uri
        for uri in [f"{result['report_uri']}/{REPORT_HTML}", f"{result['report_uri']}/{COMPARISON}"]
        + [f"{uri}/{MODEL_FILE}" for uri in result["model_uris"].values()]
        if not storage.exists(uri)
    ]
    if missing:
        raise FaunaError(f"the run reported success but these are missing: {', '.join(missing)}")


# The metrics the console summary shows (the report has them all); headers from the spec.
SUMMARY_METRICS = ("top1", "top3", "macro_f1")


def summary_table(metrics: dict[str, Any]) -> str:
    """The run's numbers in a few columns: backbone, SUMMARY_METRICS, train s, img/s."""
    specs = [metric_spec(key) for key in SUMMARY_METRICS]
    widths = [max(8, len(s.header) + 2) for s in specs]
    head = "".join(f"{s.header:>{w}}" for s, w in zip(specs, widths, strict=True))
    rows = [f"{'backbone':<14}{head}{'train s':>9}{'img/s':>8}"]
    for name, m in metrics["backbones"].items():
        values = "".join(
            f"{_number(m.get(s.key)):>{w}.3f}" for s, w in zip(specs, widths, strict=True)
        )
        rows.append(
            f"{name:<14}{values}{_number(m.get('train_seconds')):>9.0f}"
            f"{_number(m.get('images_per_second')):>8.1f}"
        )
    return "\n".join(rows)


def _number(value: Any) -> float:
    return float("nan") if value is None else float(value)


def run_kind(args: Any) -> int:
    """Hand over to the kind + MinIO script: the same knobs, as `fauna submit` flags."""
    flags = [*(f"--set {o}" for o in args.overrides)]
    for knob in knobs.KNOBS:
        value = getattr(args, knob.name, None)
        if value is not None and knob.name != "source":
            flags.append(f"{knob.flag} {knob.text(value)}")
    env = {
        **os.environ,
        "PROFILE": args.profile or "smoke",
        "SUBMIT_ARGS": " ".join([os.environ.get("SUBMIT_ARGS", ""), *flags]).strip(),
    }
    if args.source:
        env["DATA"] = args.source
    return subprocess.call(["bash", str(KIND_SCRIPT)], env=env)


def add_arguments(parser: Any) -> None:
    """The knobs as `fauna submit` names them (`--data`/$DATA: `--source`), and the route."""
    env = os.environ.get
    knobs.add_arguments(parser, from_env=True)
    parser.add_argument(
        "--backend",
        default=env("BACKEND"),
        choices=BACKENDS,
        help="embedded|docker|kind (default: the first whose prerequisites hold; $BACKEND)",
    )
    parser.add_argument("--runs-dir", default=str(RUNS_DIR), help="where runs are kept")


def run(args: Any, cfg: Config) -> int:
    """The whole pipeline on this machine, with the config the CLI built (smoke by default)."""
    backend, why = choose_backend(args.backend)
    log.info("backend: %s (%s)", backend, why)
    if backend == "kind":
        return run_kind(args)
    cfg = knobs.with_compiled_knobs(cfg, args)
    run_dir = Path(args.runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    values = knobs.values_from_args(args)
    values["source"], described = choose_data(args.source, cfg, run_dir)
    arguments = knobs.run_arguments(cfg, **values)
    log.info("data: %s", described)
    log.info(
        "backbones: %s at %d px%s",
        ", ".join(arguments["backbones"]),
        arguments["image_size"],
        f", {arguments['epochs']} epochs each" if arguments["epochs"] else "",
    )
    started = time.monotonic()
    with s3_endpoint(cfg.pipeline.bucket) as (endpoint, embedded):
        log.info("S3: %s%s", "embedded server at " if embedded else "", endpoint)
        log.info("model registry: %s", registry_line(cfg))
        if backend == "docker":  # every task in the image of this checkout
            from fauna.pipelines.local_docker import run_pipeline_in_docker

            result = run_pipeline_in_docker(cfg, arguments, run_dir)
        else:
            result = run_pipeline_locally(cfg, arguments, run_dir, mirror_checkpoints=not embedded)
        verify_published(result)
        metrics = json.loads(storage.read_text(f"{result['report_uri']}/metrics.json"))
    lines = summary_lines(result, metrics) + ["", *task_time_lines(run_dir)]
    if embedded:
        lines.append(f"(the embedded S3 bucket is saved in {EMBEDDED_S3_DIR.resolve()})")
    lines.append(f"finished in {time.monotonic() - started:.0f} s; run folder: {run_dir.resolve()}")
    print("\n".join(lines))
    return 0


def task_time_lines(run_dir: Path) -> list[str]:
    """Where each task's time went (seconds), from the timings.json every step wrote."""
    tasks = timing.collect(run_dir)
    if not tasks:
        return ["(no task timings found)"]
    return [
        "seconds per task (start-up = interpreter, imports and TensorFlow):",
        timing.table(tasks),
    ]


def summary_lines(result: dict[str, Any], metrics: dict[str, Any]) -> list[str]:
    """What the run ends with on stdout: the table, the champion decision, where things are."""
    report = Path(result["local_dir"]) / REPORT_DIR
    promotion = result["promotion"]
    best = metrics["champion"]  # None when every model is flagged as degenerate
    return [
        "",
        summary_table(metrics),
        "",
        f"champion of this run: {best['backbone']} ({best['metric']} = {best['value']:.3f})"
        if best
        else "champion of this run: none (every model is flagged as degenerate; see the report)",
        ("promoted: " if promotion["promoted"] else "not promoted: ") + promotion["reason"],
        f"report:  {(report / REPORT_HTML).resolve()}",
        f"         {result['report_uri']}/{REPORT_HTML}",
        *(f"model {name}: {uri}" for name, uri in result["model_uris"].items()),
    ]
