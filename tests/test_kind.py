"""The kind + MinIO route. This machine has no Docker engine, so the scripts run in
their dry-run mode (DRY_RUN=1 prints each exact command) with docker and kind off
PATH; shellcheck checks every shell script in the repository."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
KIND_RUN = ROOT / "scripts" / "kind-local-run.sh"
KIND_DOWN = ROOT / "scripts" / "kind-local-down.sh"
KFP = "github.com/kubeflow/pipelines/manifests/kustomize"


def dry_run(script: Path, bare_path: str, **env: str) -> tuple[list[list[str]], str]:
    """Run a script with DRY_RUN=1; returns the printed commands (as argv lists) and stderr."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("KAGGLE_", "DATA"))}
    done = subprocess.run(
        ["bash", str(script)],
        env={**clean, "PATH": bare_path, "DRY_RUN": "1", "TAG": "abc1234", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    commands = [shlex.split(line[2:]) for line in done.stdout.splitlines() if line.startswith("+ ")]
    return commands, done.stderr


def index_of(commands: list[list[str]], *words: str) -> int:
    """Position of the first command that contains all `words` in order."""
    for i, argv in enumerate(commands):
        it = iter(argv)
        if all(any(w == a for a in it) for w in words):
            return i
    raise AssertionError(f"no command with {words} in:\n" + "\n".join(map(shlex.join, commands)))


def test_dry_run_prints_the_whole_route_in_order(bare_path):
    commands, stderr = dry_run(KIND_RUN, bare_path)
    assert "not installed here: docker kind kubectl helm" in stderr
    config = str(ROOT / "deploy" / "kind" / "kind-config.yaml")
    order = [
        index_of(commands, "kind", "create", "cluster", "--name", "fauna", "--config", config),
        index_of(commands, "apply", "-k", f"{KFP}/cluster-scoped-resources?ref=2.17.2"),
        index_of(commands, "wait", "--for", "condition=established", "crd/applications.app.k8s.io"),
        index_of(commands, "apply", "-k", f"{KFP}/env/platform-agnostic?ref=2.17.2"),
        index_of(
            commands,
            "wait",
            "deployment/mysql",
            "deployment/metadata-grpc-deployment",
            "deployment/ml-pipeline",
        ),
        index_of(commands, "make", "image-cpu", "TAG=abc1234"),
        index_of(commands, "kind", "load", "docker-image", "localhost/fauna-cpu:abc1234"),
        index_of(commands, "helm", "upgrade", "--install", "fauna", "minio.enabled=true"),
        index_of(commands, "port-forward", "svc/ml-pipeline", "8888:8888"),
        index_of(commands, "submit", "--host", "http://localhost:8888", "--wait"),
    ]
    assert order == sorted(order)
    kubectl = [argv for argv in commands if argv[0] == "kubectl"]
    assert all(
        argv[1:3] == ["--context", "kind-fauna"] for argv in kubectl
    )  # never another cluster


def test_helm_install_points_the_chart_at_minio_and_the_local_image(bare_path):
    commands, _ = dry_run(KIND_RUN, bare_path)
    helm = commands[index_of(commands, "helm", "upgrade", "--install")]
    for setting in (
        "minio.enabled=true",
        "image.registry=localhost",
        "image.tag=abc1234",
        "image.pullPolicy=IfNotPresent",
    ):
        assert setting in helm
    assert "--wait" in helm and helm[helm.index("--kube-context") + 1] == "kind-fauna"
    assert not any("secretAccessKey" in a or "fauna-local-only" in a for a in helm)  # a file
    annotate = commands[index_of(commands, "annotate", "configmap", "kfp-launcher")]
    assert "meta.helm.sh/release-name=fauna" in annotate  # Helm adopts KFP's kfp-launcher


def test_submit_is_cpu_only_smoke_on_the_loaded_image(bare_path):
    commands, _ = dry_run(KIND_RUN, bare_path)
    submit = commands[index_of(commands, "submit")]
    assert submit[submit.index("--profile") + 1] == "smoke"
    sets = {submit[i + 1] for i, a in enumerate(submit) if a == "--set"}
    assert "pipeline.use_gpu=false" in sets
    assert "pipeline.image_cpu=localhost/fauna-cpu:abc1234" in sets
    # Without Kaggle credentials: a generated sample, uploaded to MinIO first.
    assert index_of(commands, "synth", "--out") < index_of(commands, "submit")
    assert submit[submit.index("--source") + 1] == "s3://fauna/datasets/synthetic-sample"


def test_settings_change_the_commands(bare_path):
    commands, _ = dry_run(
        KIND_RUN,
        bare_path,
        PIPELINE_VERSION="2.14.3",
        DATA="s3://mine/animals",
        CLUSTER="dev",
        SUBMIT_ARGS="--set train.backbones=[resnet50] --set preprocess.image_size=96",
    )
    index_of(commands, "apply", "-k", f"{KFP}/cluster-scoped-resources?ref=2.14.3")
    index_of(commands, "apply", "-k", f"{KFP}/env/platform-agnostic?ref=2.14.3")
    index_of(commands, "kind", "create", "cluster", "--name", "dev")
    submit = commands[index_of(commands, "submit")]
    assert submit[submit.index("--source") + 1] == "s3://mine/animals"
    assert submit[-4:] == [
        "--set",
        "train.backbones=[resnet50]",
        "--set",
        "preprocess.image_size=96",
    ]
    assert not any(argv[1:2] == ["synth"] for argv in commands)


def test_without_docker_a_real_run_stops_with_a_clear_message(bare_path):
    env = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
    done = subprocess.run(
        ["bash", str(KIND_RUN)],
        env={**env, "PATH": bare_path},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "needs docker kind kubectl helm on PATH" in done.stderr
    assert done.stdout == ""


def test_local_down_deletes_the_cluster(bare_path):
    commands, _ = dry_run(KIND_DOWN, bare_path)
    assert commands == [["kind", "delete", "cluster", "--name", "fauna"]]
    done = subprocess.run(
        ["bash", str(KIND_DOWN)], env={"PATH": bare_path}, capture_output=True, text=True
    )
    assert done.returncode == 0 and "kind is not installed" in done.stderr  # nothing to do


def shell_scripts() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in {".venv", ".git", "node_modules", "runs", "work"}]
        found += [Path(folder, f) for f in files if f.endswith(".sh")]
    found += [p for p in (ROOT / ".ci").glob("*") if p.is_file()]
    return sorted(found)


def test_shellcheck_every_shell_script():
    scripts = shell_scripts()
    assert KIND_RUN in scripts and KIND_DOWN in scripts
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck; .ci/run does)")
    done = subprocess.run(
        ["shellcheck", "--severity=style", *map(str, scripts)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
