"""The Docker route of local-run, without an engine: which tasks must have written what,
what reaches the containers, and that a run which wrote nothing fails loudly.
(`BACKEND=docker make local-run` runs the real thing; CI does.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from google.protobuf import json_format

from fauna.config import load_config
from fauna.pipelines.local_docker import (
    EXECUTOR_OUTPUT,
    METADATA_ONLY,
    DockerRunError,
    docker_answers,
    expected_tasks,
    source_mounts,
    task_environment,
    verify_task_outputs,
)
from fauna.pipelines.pipeline import build_pipeline, run_arguments


@pytest.fixture(scope="module")
def spec() -> dict:
    return json_format.MessageToDict(build_pipeline(load_config(None, "smoke", {})).pipeline_spec)


def container_tasks(spec: dict) -> tuple[list[str], list[str]]:
    """(top-level container tasks, container tasks inside the one loop), from the spec."""
    top, loop = [], []
    for task in spec["root"]["dag"]["tasks"].values():
        component = spec["components"][task["componentRef"]["name"]]
        if "dag" in component:
            loop += [t["componentRef"]["name"][5:] for t in component["dag"]["tasks"].values()]
        else:
            top.append(task["componentRef"]["name"][5:])
    return top, loop


def test_loop_bodies_count_once_per_backbone(spec):
    cfg = load_config(None, "smoke", {})
    top, loop = container_tasks(spec)
    assert "ingest" in top and "train" in loop
    for backbones in (["vgg16"], ["vgg16", "resnet50", "inceptionv3"]):
        arguments = run_arguments(cfg, backbones=backbones)
        assert expected_tasks(spec, arguments) == len(top) + len(backbones) * len(loop)


def fake_run(root: Path, spec: dict, tasks: list[str], *, empty: str = "") -> Path:
    """A kfp.local pipeline root where `tasks` (paths like for-loop-1-iteration-0/train)
    wrote their executor output and artifacts; the artifact named `empty` has no file."""
    run = root / "fauna-2026-01-01-00-00-00-000000"
    for task in tasks:
        task_root = run / task
        outputs = spec["components"][f"comp-{task_root.name}"].get("outputDefinitions", {})
        written = {}
        for output, definition in outputs.get("artifacts", {}).items():
            path = task_root / output
            metadata = {}
            if definition["artifactType"]["schemaTitle"] in METADATA_ONLY:
                metadata = {"top1": 0.5}  # metrics live in the metadata, no file
            elif output != empty:
                path.mkdir(parents=True)
                (path / "data.txt").write_text("x")
            artifact = {"name": output, "uri": str(path), "metadata": metadata}
            written[output] = {"artifacts": [artifact]}
        task_root.mkdir(parents=True, exist_ok=True)
        (task_root / EXECUTOR_OUTPUT).write_text(json.dumps({"artifacts": written}))
    return root


def test_complete_outputs_pass(spec, tmp_path):
    top, loop = container_tasks(spec)
    iterations = [f"for-loop-1-iteration-{i}/{t}" for i in range(2) for t in loop]
    root = fake_run(tmp_path, spec, top + iterations)
    verify_task_outputs(root, spec, len(top) + 2 * len(loop))


def test_a_task_that_wrote_nothing_fails_the_run(spec, tmp_path):
    top, _ = container_tasks(spec)
    root = fake_run(tmp_path, spec, [t for t in top if t != "publish"])
    with pytest.raises(DockerRunError, match=f"{len(top)} tasks ran but only {len(top) - 1}"):
        verify_task_outputs(root, spec, len(top))


def test_an_empty_artifact_fails_the_run(spec, tmp_path):
    top, _ = container_tasks(spec)
    root = fake_run(tmp_path, spec, top, empty="raw")
    with pytest.raises(DockerRunError, match=r"ingest\.raw .* is missing or empty"):
        verify_task_outputs(root, spec, len(top))


def test_a_local_source_is_mounted_read_only_at_the_same_path(tmp_path, monkeypatch):
    data = tmp_path / "photos"
    data.mkdir()
    monkeypatch.chdir(tmp_path)
    arguments = {"source": "photos"}
    [mount] = source_mounts(arguments)
    assert arguments["source"] == str(data) == mount["Target"] == mount["Source"]
    assert mount["ReadOnly"] is True and mount["Type"] == "bind"
    for remote in ("s3://bucket/photos", "kaggle:owner/name", "https://example.org/a.zip"):
        assert source_mounts({"source": remote}) == []


def test_only_storage_kaggle_and_log_settings_reach_the_containers(monkeypatch):
    monkeypatch.setenv("S3_ENDPOINT_URL", "http://127.0.0.1:9000")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("GITHUB_TOKEN", "must-not-leak")
    env = task_environment()
    assert env["S3_ENDPOINT_URL"] == "http://127.0.0.1:9000" and env["AWS_ACCESS_KEY_ID"] == "key"
    assert "GITHUB_TOKEN" not in env and "PATH" not in env


def test_no_engine_reads_as_no_engine(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    assert docker_answers() is False
