"""`fauna local-run` (`make local-run`): the whole pipeline on this machine.

Backends:
- embedded (default without Docker): the same pipeline function under
  `kfp.local.SubprocessRunner(use_venv=False)`, with this environment's Python;
  publishing goes to `S3_ENDPOINT_URL` when set (a real MinIO), otherwise to an
  S3 server embedded for the run (moto). The embedded bucket is saved under
  runs/embedded-s3/ and restored next time, so the champion carries over.
- kind: a kind cluster with KFP + MinIO (scripts/kind-local-run.sh), chosen when a
  Docker engine and `kind` are available.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fauna import storage
from fauna.config import Config
from fauna.errors import FaunaError
from fauna.sources import kaggle_credentials_found

RUNS_DIR = Path("runs")
EMBEDDED_S3_DIR = RUNS_DIR / "embedded-s3"
KIND_SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kind-local-run.sh"
SAMPLE_PER_CLASS = 24


def choose_backend(requested: str | None) -> tuple[str, str]:
    """(backend, why) — kind where a Docker engine and kind work, docker where only Docker does."""
    if requested in ("embedded", "docker", "kind"):
        return requested, "requested with BACKEND"
    if requested:
        raise FaunaError(f"BACKEND must be embedded, docker or kind, got {requested!r}")
    if not shutil.which("docker"):
        return "embedded", "docker is not installed"
    probe = subprocess.run(["docker", "info"], capture_output=True, timeout=20, check=False)
    if probe.returncode != 0:
        return "embedded", "no Docker engine answers `docker info`"
    if not shutil.which("kind"):
        return "docker", "a Docker engine answers; kind is not installed"
    return "kind", "Docker and kind are available"


def choose_data(data: str | None, cfg: Config, run_dir: Path) -> tuple[str, str]:
    """(source, description): DATA, else Kaggle with credentials, else a generated sample."""
    if data:
        return data, f"your data: {data}"
    if kaggle_credentials_found():
        return cfg.data.source, f"the Kaggle dataset {cfg.data.source}"
    from fauna.synthetic import generate

    sample = run_dir / "sample-data"
    generate(sample, per_class=SAMPLE_PER_CLASS, size_range=(96, 144), seed=cfg.split.seed)
    return str(sample.resolve()), (
        f"a GENERATED sample ({SAMPLE_PER_CLASS} images x 30 classes of coloured patterns, "
        "not animals): no Kaggle credentials and no DATA given"
    )


@contextmanager
def s3_endpoint(bucket: str):
    """Yield (endpoint, embedded?): the configured S3/MinIO, or an embedded server for the run."""
    if os.environ.get("S3_ENDPOINT_URL"):
        storage.ensure_bucket(bucket)
        yield os.environ["S3_ENDPOINT_URL"], False
        return
    from fauna.embedded_s3 import embedded_s3_server

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


def run_pipeline_locally(cfg: Config, arguments: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    """Run the pipeline under kfp.local with these run parameters; returns publish.json."""
    from kfp import local

    from fauna.pipelines.pipeline import build_pipeline

    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(run_dir / "kfp"),
        raise_on_error=True,
    )
    pipeline = build_pipeline(cfg)
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
    return json.loads((published / "publish.json").read_text()) | {"local_dir": str(published)}


def verify_published(result: dict[str, Any]) -> None:
    """Do not trust the reported status alone: check the objects are really in the bucket."""
    missing = [
        uri
        for uri in [f"{result['report_uri']}/report.html", f"{result['report_uri']}/metrics.json"]
        + [f"{uri}/model.keras" for uri in result["model_uris"].values()]
        if not storage.exists(uri)
    ]
    if missing:
        raise FaunaError(f"the run reported success but these are missing: {', '.join(missing)}")


def summary_table(metrics: dict[str, Any]) -> str:
    rows = [f"{'backbone':<14}{'top-1':>8}{'top-3':>8}{'macro-F1':>10}{'train s':>9}{'img/s':>8}"]
    for name, m in metrics["backbones"].items():
        rows.append(
            f"{name:<14}{m.get('top1', float('nan')):>8.3f}{m.get('top3', float('nan')):>8.3f}"
            f"{m.get('macro_f1', float('nan')):>10.3f}{m.get('train_seconds', float('nan')):>9.0f}"
            f"{m.get('images_per_second', float('nan')):>8.1f}"
        )
    return "\n".join(rows)


def run_kind(args: Any, knobs: dict[str, Any]) -> int:
    """Hand over to the kind + MinIO script: the same run parameters, as `fauna submit` flags."""
    flags = [*(f"--set {o}" for o in args.overrides)]
    for name, value in knobs.items():
        if value is not None and name != "source":
            text = ",".join(value) if isinstance(value, list) else str(value)
            flags.append(f"--{name.replace('_', '-')} {text}")
    env = {
        **os.environ,
        "PROFILE": args.profile or "smoke",
        "SUBMIT_ARGS": " ".join([os.environ.get("SUBMIT_ARGS", ""), *flags]).strip(),
    }
    if knobs.get("source"):
        env["DATA"] = knobs["source"]
    return subprocess.call(["bash", str(KIND_SCRIPT)], env=env)


def add_arguments(parser: Any) -> None:
    env = os.environ.get
    parser.add_argument("--data", default=env("DATA"), help="folder, archive, s3:// or URL ($DATA)")
    parser.add_argument(
        "--backbones",
        default=env("BACKBONES"),
        type=lambda text: [b.strip() for b in text.split(",") if b.strip()],
        help="comma-separated list ($BACKBONES)",
    )
    parser.add_argument(
        "--epochs", default=env("EPOCHS"), type=int, help="total epochs per backbone ($EPOCHS)"
    )
    parser.add_argument(
        "--image-size", default=env("IMAGE_SIZE"), type=int, help="pixels ($IMAGE_SIZE)"
    )
    parser.add_argument(
        "--backend", default=env("BACKEND"), help="embedded|docker|kind (default: auto; $BACKEND)"
    )
    parser.add_argument("--runs-dir", default=str(RUNS_DIR), help="where runs are kept")


def run(args: Any, cfg: Config) -> int:
    """The whole pipeline on this machine, with the config the CLI built (smoke by default)."""
    from fauna.pipelines.pipeline import run_arguments

    backend, why = choose_backend(args.backend)
    print(f"backend: {backend} ({why})")
    knobs = {
        "source": args.data,
        "backbones": args.backbones,
        "epochs": args.epochs,
        "image_size": args.image_size,
    }
    if backend == "kind":
        return run_kind(args, knobs)

    run_dir = Path(args.runs_dir) / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    knobs["source"], described = choose_data(args.data, cfg, run_dir)
    arguments = run_arguments(cfg, **knobs)
    print(f"data: {described}")
    print(
        f"backbones: {', '.join(arguments['backbones'])} at {arguments['image_size']} px"
        + (f", {arguments['epochs']} epochs each" if arguments["epochs"] else "")
    )
    started = time.monotonic()
    with s3_endpoint(cfg.pipeline.bucket) as (endpoint, embedded):
        print(f"S3: {'embedded server at ' if embedded else ''}{endpoint}")
        if backend == "docker":  # every task in the image of this checkout
            from fauna.pipelines.local_docker import run_pipeline_in_docker

            result = run_pipeline_in_docker(cfg, arguments, run_dir)
        else:
            result = run_pipeline_locally(cfg, arguments, run_dir)
        verify_published(result)
        metrics = json.loads(storage.read_text(f"{result['report_uri']}/metrics.json"))
    report = Path(result["local_dir"]) / "report"
    print()
    print(summary_table(metrics))
    print()
    promotion = result["promotion"]
    best = metrics["champion"]  # None when every model is flagged as degenerate
    print(
        f"champion of this run: {best['backbone']} ({best['metric']} = {best['value']:.3f})"
        if best
        else "champion of this run: none (every model is flagged as degenerate; see the report)"
    )
    print(("promoted: " if promotion["promoted"] else "not promoted: ") + promotion["reason"])
    print(f"report:  {(report / 'report.html').resolve()}")
    print(f"         {result['report_uri']}/report.html")
    for name, uri in result["model_uris"].items():
        print(f"model {name}: {uri}")
    if embedded:
        print(f"(the embedded S3 bucket is saved in {EMBEDDED_S3_DIR.resolve()})")
    print(f"finished in {time.monotonic() - started:.0f} s; run folder: {run_dir.resolve()}")
    return 0
