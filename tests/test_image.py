"""The CPU image, built and run: what a user, a hardened cluster and the KFP launcher do with it.

`make image-test` builds the image twice (the second time with only a new revision) and
runs this file with FAUNA_IMAGE / FAUNA_IMAGE_REBUILT set. Without them, or without a
Docker engine, every test here is skipped (`make test` on a machine without Docker).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.docker

DOCKER = os.environ.get("DOCKER", "docker")
IMAGE_UID = 10001
RANDOM_USER = "54321:0"  # OpenShift-style: an arbitrary uid in group 0
PHOTO_CLASSES, PHOTOS_PER_CLASS = 4, 6
# Where the KFP launcher tells a lightweight component to write its executor output.
KFP_OUTPUT_FILE = "/tmp/kfp_outputs/output_metadata.json"
LOCAL_CA_DIR = Path("/usr/local/share/ca-certificates")
ROOT = Path(__file__).resolve().parent.parent


def docker(*args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(
            f"docker {' '.join(args)[:300]} exited {done.returncode}:\n"
            f"{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
        )
    return done


# A shell script for an image: one epoch of a small backbone on generated 32 px photos,
# offline, into /work/model (the GPU image's CPU fallback and the serving image use it).
TRAIN_A_TINY_MODEL = (
    "set -e\n"
    "fauna synth --out /work/photos --classes 3 --per-class 8\n"
    "fauna ingest --source /work/photos --out /work/raw\n"
    "fauna preprocess --raw /work/raw --out /work/pre --image-size 32\n"
    "fauna split --data /work/pre --out /work/splits\n"
    "fauna train --data /work/splits --backbone mobilenetv3small --out /work/model"
    " --epochs 1 --set train.weights=none --set train.batch_size=4\n"
)


def engine_answers() -> bool:
    if not shutil.which(DOCKER):
        return False
    probe = subprocess.run([DOCKER, "version"], capture_output=True, timeout=30, check=False)
    return probe.returncode == 0


def image_named_by(variable: str, built_by: str) -> str:
    """The image `variable` names, present in an engine that answers; skipped when unset."""
    name = os.environ.get(variable)
    if not name:
        pytest.skip(f"no image to check: `{built_by}` builds one and sets {variable}")
    if not engine_answers():
        pytest.fail(f"{variable}={name} but no Docker engine answers `{DOCKER} version`")
    docker("image", "inspect", name)
    return name


@pytest.fixture(scope="session")
def image() -> str:
    return image_named_by("FAUNA_IMAGE", "make image-test")


def shared_folder(path: Path) -> Path:
    """A host folder the image's user (uid 10001) and group 0 may write, as on a cluster."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        os.chown(path, IMAGE_UID, 0)
        path.chmod(0o775)
    else:
        path.chmod(0o777)
    return path


@pytest.fixture(scope="session")
def photos(image: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated photos (PHOTO_CLASSES x PHOTOS_PER_CLASS), written by the image itself."""
    root = shared_folder(tmp_path_factory.mktemp("photos"))
    docker(
        "run", "--rm", "--network", "none", "-v", f"{root}:/data", image,
        "synth", "--out", "/data/photos", "--classes", str(PHOTO_CLASSES),
        "--per-class", str(PHOTOS_PER_CLASS),
    )  # fmt: skip
    return root / "photos"


def run_python(image: str, code: str, *options: str) -> subprocess.CompletedProcess:
    return docker("run", "--rm", "--network", "none", *options, "--entrypoint", "python", image,
                  "-c", code)  # fmt: skip


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


# --- the image as shipped ------------------------------------------------------------------


def test_fauna_is_the_entrypoint(image):
    done = docker("run", "--rm", "--network", "none", image)  # CMD ["--help"]
    assert "usage: fauna" in done.stdout
    for command in ("ingest", "preprocess", "train", "publish"):
        assert command in done.stdout


def test_runs_as_uid_10001_without_pip_or_pip_settings(image):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    assert not [e for e in config["Env"] if e.startswith("PIP_")], config["Env"]
    probe = run_python(
        image,
        "import importlib.util, json, os, shutil; print(json.dumps({'uid': os.getuid(), "
        "'pip': importlib.util.find_spec('pip') is not None, "
        "'pip_on_path': [p for p in ('pip', 'pip3') if shutil.which(p)], "
        "'pip_env': [k for k in os.environ if k.startswith('PIP_')]}))",
    )
    found = json.loads(probe.stdout)
    assert found == {"uid": IMAGE_UID, "pip": False, "pip_on_path": [], "pip_env": []}


def test_imports_with_a_prebuilt_font_cache(image):
    done = run_python(
        image,
        "import glob, os; before = sorted(glob.glob('/tmp/matplotlib/fontlist-*.json'));"
        "import tensorflow, kfp, fauna, fauna.cli, matplotlib.font_manager, matplotlib;"
        "print(tensorflow.__version__, kfp.__version__, matplotlib.get_cachedir(), before)",
    )
    assert "font cache" not in done.stderr and "Matplotlib" not in done.stderr, done.stderr
    tf_version, _, cache_dir, fontlists = done.stdout.split(" ", 3)
    assert tf_version.startswith("2.")
    assert cache_dir == "/tmp/matplotlib" and "fontlist-" in fontlists  # built with the image


def test_publish_can_register_models_but_serving_stays_out(image):
    """Issue 17: the CPU image has the Model Registry client (publish uses it when
    `model_registry.url` is set); kserve and its web stack are the serving image's alone."""
    done = run_python(
        image,
        "import importlib.util as u, json; from model_registry import ModelRegistry;"
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('kserve', 'fastapi', 'uvicorn', 'pandas')}))",
    )
    assert json.loads(done.stdout) == dict.fromkeys(
        ("kserve", "fastapi", "uvicorn", "pandas"), False
    )


def checkout_modules() -> set[str]:
    """The modules of the fauna package in this checkout (pyproject's package-dir layout)."""
    roots = {
        "fauna": ROOT / "src" / "fauna",
        "fauna.components": ROOT / "components",
        "fauna.pipelines": ROOT / "pipelines",
    }
    found = set()
    for package, folder in roots.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if "__pycache__" not in parts:
                found.add(".".join((package, *parts)).removesuffix(".__init__"))
    return found


def test_the_image_ships_every_module_and_data_file_of_the_checkout(image):
    """A package missing from pyproject's list works in the editable venv, not in the image."""
    listed = run_python(
        image,
        "import fauna, pkgutil; "
        "print(' '.join(m.name for m in pkgutil.walk_packages(fauna.__path__, 'fauna.')))",
    )
    missing = sorted(checkout_modules() - set(listed.stdout.split()) - {"fauna"})
    assert not missing, f"not in the image (pyproject.toml packages?): {missing}"
    data = [
        str(p.relative_to(ROOT / "src"))
        for p in (ROOT / "src" / "fauna").rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc")
    ]
    absent = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", image, "-c",
        "import sys, pathlib, fauna; base = pathlib.Path(fauna.__file__).parent.parent; "
        "print(' '.join(f for f in sys.argv[1:] if not (base / f).is_file()))",
        *data,
    ).stdout.split()  # fmt: skip
    assert not absent, f"package data not in the image (pyproject.toml package-data?): {absent}"


def test_no_build_secret_in_any_layer(image):
    """pip.conf and the CA bundle are BuildKit secrets: no file, history line or byte of them."""
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert "BEGIN CERTIFICATE" not in history and "src=" not in history
    found = docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "find", image,
        "/", "-xdev", "(", "-name", "pip.conf", "-o", "-name", "ca.pem",
        "-o", "-name", "with-build-secrets", ")", "-print",
    )  # fmt: skip
    assert found.stdout.strip() == ""
    # The local CAs this machine trusts (TLS inspection) are not in any public bundle:
    # one line of each must appear nowhere in the saved image.
    markers = [
        lines[len(lines) // 2]
        for crt in sorted(LOCAL_CA_DIR.glob("*.crt"))
        if len(lines := [ln for ln in crt.read_text().splitlines() if ln and "-----" not in ln]) > 2
    ]
    if not markers:
        return
    save = subprocess.Popen([DOCKER, "save", image], stdout=subprocess.PIPE)
    grep = subprocess.run(
        ["grep", "-a", "-c", "-F", *[arg for m in markers for arg in ("-e", m)]],
        stdin=save.stdout,
        capture_output=True,
        text=True,
        check=False,
    )
    save.stdout.close()
    assert save.wait() == 0
    assert grep.stdout.strip() == "0", f"a local CA certificate is inside {image}"


def test_a_new_revision_reuses_every_layer(image):
    rebuilt = os.environ.get("FAUNA_IMAGE_REBUILT")
    if not rebuilt:
        pytest.skip("FAUNA_IMAGE_REBUILT unset: `make image-test` builds the image twice")

    def inspect(name: str) -> dict[str, Any]:
        return json.loads(docker("image", "inspect", name).stdout)[0]

    first, second = inspect(image), inspect(rebuilt)
    revision = "org.opencontainers.image.revision"
    assert first["Config"]["Labels"][revision] != second["Config"]["Labels"][revision]
    assert first["RootFS"]["Layers"] == second["RootFS"]["Layers"]
    source = first["Config"]["Labels"]["org.opencontainers.image.source"]
    assert source == "" or (source.startswith("https://") and "@" not in source), source


# --- the data steps, offline, on a read-only root, as uid 10001 and as a random uid --------


@pytest.mark.parametrize("user", [None, RANDOM_USER], ids=["uid-10001", "random-uid-group-0"])
def test_data_steps_offline_on_a_read_only_root(image, photos, tmp_path, user):
    work = shared_folder(tmp_path / "work")
    script = (
        "set -e\n"
        "fauna ingest --source /photos --out /work/raw\n"
        "fauna preprocess --raw /work/raw --out /work/pre --image-size 32\n"
        "fauna split --data /work/pre --out /work/splits\n"
        "fauna augment --data /work/splits --out /work/augmented\n"
    )
    done = docker(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
        *(["--user", user] if user else []),
        "-v", f"{photos}:/photos:ro", "-v", f"{work}:/work",
        "--entrypoint", "sh", image, "-c", script,
    )  # fmt: skip
    # TensorFlow's start-up notices stay out of the steps' logs; so do matplotlib's warnings.
    for noise in ("oneDNN", "cpu_feature_guard", "Matplotlib", "Traceback"):
        assert noise not in done.stderr, done.stderr[-3000:]
    total = PHOTO_CLASSES * PHOTOS_PER_CLASS
    assert len(rows(work / "raw" / "manifest.csv")) == total
    assert len(rows(work / "pre" / "manifest.csv")) == total
    assert sorted((work / "pre" / "shards").iterdir())
    splits = rows(work / "splits" / "manifest.csv")
    assert len(splits) == total
    assert {r["split"] for r in splits} == {"train", "val", "test"}
    augmented = rows(work / "augmented" / "manifest.csv")
    assert len([r for r in augmented if r["split"] != "train"]) == len(
        [r for r in splits if r["split"] != "train"]
    )
    uid = int(user.split(":")[0]) if user else IMAGE_UID
    assert {p.stat().st_uid for p in (work / "augmented").rglob("*")} == {uid}


@pytest.mark.parametrize("mount", ["read-only", "owned-by-root"])
def test_an_unwritable_output_is_one_line_naming_path_and_uid(image, photos, tmp_path, mount):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o755)
    if mount == "owned-by-root" and os.stat(locked).st_uid != 0:
        pytest.skip("needs a host folder owned by root (run as root)")
    suffix = ":ro" if mount == "read-only" else ""
    done = docker(
        "run", "--rm", "--network", "none", "-v", f"{photos}:/photos:ro",
        "-v", f"{locked}:/out{suffix}", image, "ingest", "--source", "/photos", "--out", "/out/raw",
        check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    last = done.stderr.strip().splitlines()[-1]  # names /out/raw or the folder it goes in
    assert "/out" in last and str(IMAGE_UID) in last, last


# --- one component exactly as the KFP launcher runs it ------------------------------------


def compiled_pipeline(image: str, photos_in_container: str, out: Path) -> dict[str, Any]:
    """`fauna compile` of this checkout (FAUNA_CLI: another fauna command) against the image."""
    fauna = os.environ.get("FAUNA_CLI") or str(Path(sys.executable).with_name("fauna"))
    done = subprocess.run(
        [*fauna.split(), "compile", "--out", str(out), "--profile", "smoke",
         "--set", f"pipeline.image_cpu={image}", "--set", f"pipeline.image_gpu={image}",
         "--set", f"data.source={photos_in_container}"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return next(yaml.safe_load_all(out.read_text()))  # the pipeline spec; then platform specs


def first_task(spec: dict[str, Any]) -> str:
    """The root task that needs no other task's output (ingest): runnable on its own."""
    tasks = spec["root"]["dag"]["tasks"]
    roots = [
        name
        for name, task in tasks.items()
        if "componentRef" in task
        and not task.get("dependentTasks")
        and "taskOutputArtifact" not in json.dumps(task.get("inputs", {}))
        and "taskOutputParameter" not in json.dumps(task.get("inputs", {}))
    ]
    assert len(roots) == 1, roots
    return roots[0]


def parameter_values(spec: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    """What the launcher resolves each input parameter to: pipeline defaults and constants."""
    defaults = spec["root"]["inputDefinitions"]["parameters"]
    values = {}
    for name, source in task.get("inputs", {}).get("parameters", {}).items():
        if "componentInputParameter" in source:
            values[name] = defaults[source["componentInputParameter"]]["defaultValue"]
        elif "runtimeValue" in source:
            values[name] = source["runtimeValue"]["constant"]
        else:
            pytest.fail(f"cannot resolve input {name}: {source}")
    return values


def executor_input(spec: dict[str, Any], task_name: str, run_root: str) -> dict[str, Any]:
    task = spec["root"]["dag"]["tasks"][task_name]
    component = spec["components"][task["componentRef"]["name"]]
    outputs = component.get("outputDefinitions", {})
    assert not outputs.get("parameters"), "only artifact outputs are checked here"
    artifacts = {
        name: {
            "artifacts": [
                {
                    "name": name,
                    "type": dict(definition["artifactType"]),
                    "uri": f"minio://{run_root}/{task_name}/{name}",
                    "metadata": {},
                }
            ]
        }
        for name, definition in outputs.get("artifacts", {}).items()
    }
    assert artifacts, f"{task_name} has no output artifact to check"
    return {
        "inputs": {"parameterValues": parameter_values(spec, task)},
        "outputs": {"artifacts": artifacts, "outputFile": KFP_OUTPUT_FILE},
    }


def test_a_component_runs_as_the_kfp_launcher_runs_it(image, photos, tmp_path):
    spec = compiled_pipeline(image, "/photos", tmp_path / "pipeline.yaml")
    task_name = first_task(spec)
    task = spec["root"]["dag"]["tasks"][task_name]
    executor_label = spec["components"][task["componentRef"]["name"]]["executorLabel"]
    container = spec["deploymentSpec"]["executors"][executor_label]["container"]
    assert container["image"] == image
    run_root = f"fauna-image-test/{uuid.uuid4().hex[:8]}"
    executor = executor_input(spec, task_name, run_root)
    args = [a.replace("{{$}}", json.dumps(executor)) for a in container.get("args", [])]
    leftover = [a for a in container["command"] + args if "{{$" in a]
    assert not leftover, f"placeholders the launcher would fill that this test does not: {leftover}"

    name = f"fauna-image-test-{uuid.uuid4().hex[:8]}"
    docker(
        "create", "--name", name, "--network", "none", "-v", f"{photos}:/photos:ro",
        "--entrypoint", container["command"][0], image, *container["command"][1:], *args,
    )  # fmt: skip
    try:
        run = docker("start", "--attach", name, check=False)
        assert run.returncode == 0, f"{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
        docker("cp", f"{name}:{KFP_OUTPUT_FILE}", str(tmp_path / "executor_output.json"))
        docker("cp", f"{name}:/minio/{run_root}", str(tmp_path / "minio"))
    finally:
        docker("rm", "--force", name, check=False)

    written = json.loads((tmp_path / "executor_output.json").read_text())
    for output, expected in executor["outputs"]["artifacts"].items():
        local = tmp_path / "minio" / task_name / output
        assert local.is_dir() and any(p.is_file() for p in local.rglob("*")), local
        [artifact] = written["artifacts"][output]["artifacts"]
        assert artifact["uri"] == expected["artifacts"][0]["uri"]
        assert artifact["metadata"], f"{task_name}.{output} was written without metadata"
