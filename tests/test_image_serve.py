"""The serving image, built and run (issue 17): `fauna serve` answers a real V1 request with
species names from a model trained in the same image, offline, as uid 10001.

`make image-test-serve` builds the image and runs this file with FAUNA_SERVE_IMAGE set;
without it every test here is skipped.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from test_image import IMAGE_UID, TRAIN_A_TINY_MODEL, docker, image_named_by, shared_folder

pytestmark = pytest.mark.docker

TRAIN = TRAIN_A_TINY_MODEL + "exec fauna serve --model /work/model --name fauna --http-port 8080\n"
# Runs inside the container (its network is `none`): ready, then one V1 request.
ASK = """
import base64, glob, json, os, urllib.request
ready = urllib.request.urlopen("http://127.0.0.1:8080/v1/models/fauna", timeout=5).status
photo = sorted(glob.glob("/work/photos/**/*.jp*g", recursive=True))[0]
body = {"instances": [{"b64": base64.b64encode(open(photo, "rb").read()).decode()}]}
request = urllib.request.Request("http://127.0.0.1:8080/v1/models/fauna:predict",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=60))
print(json.dumps({"ready": ready, "uid": os.getuid(), "answer": answer}))
"""


@pytest.fixture(scope="module")
def serve_image() -> str:
    return image_named_by("FAUNA_SERVE_IMAGE", "make image-test-serve")


def test_the_image_runs_fauna_serve_on_port_8080(serve_image):
    config = json.loads(
        docker("image", "inspect", "--format", "{{json .Config}}", serve_image).stdout
    )
    assert config["Entrypoint"] == ["fauna"] and config["Cmd"][0] == "serve"
    assert "8080/tcp" in config["ExposedPorts"]
    assert config["User"] == f"{IMAGE_UID}:{IMAGE_UID}"
    done = docker("run", "--rm", "--network", "none", serve_image)  # CMD: serve --help
    assert "usage: fauna serve" in done.stdout


def test_serves_species_names_from_a_model_trained_in_the_image(serve_image, tmp_path: Path):
    work = shared_folder(tmp_path / "work")
    name = f"fauna-serve-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--name", name, "--network", "none", "--read-only", "--tmpfs", "/tmp",
        "-v", f"{work}:/work", "--entrypoint", "sh", serve_image, "-c", TRAIN,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 900
        while True:
            probe = docker(
                "exec", name, "python", "-c", ASK, check=False, timeout=120
            )  # fmt: skip
            if probe.returncode == 0:
                break
            running = docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            if running != "true" or time.monotonic() > deadline:
                pytest.fail(docker("logs", name, check=False).stderr[-4000:])
            time.sleep(5)
        found = json.loads(probe.stdout.strip().splitlines()[-1])
    finally:
        logs = docker("logs", name, check=False).stderr
        docker("rm", "-f", name, check=False)
    assert "Traceback" not in logs, logs[-3000:]
    assert found["ready"] == 200 and found["uid"] == IMAGE_UID
    (prediction,) = found["answer"]["predictions"]
    top = prediction["top"]
    assert len(top) == 3 and all(t["name"] and 0 <= t["probability"] <= 1 for t in top)
    assert sum(t["probability"] for t in top) == pytest.approx(1, abs=1e-3)  # 3 classes
