"""The GPU image, built and run on any machine (issue 18.13): TensorFlow imports, the CUDA
libraries it was built against ship in the image, and a node without a GPU trains on the
CPU after one clear line instead of failing.

`make image-test-gpu` builds the image (~7 GB; not in CI) and runs this file with
FAUNA_GPU_IMAGE set; without it every test here is skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_image import TRAIN_A_TINY_MODEL, docker, image_named_by, shared_folder

pytestmark = pytest.mark.docker

# The CUDA libraries TensorFlow dlopens, from the nvidia-* wheels of tensorflow[and-cuda],
# in load order (each needs only those before it; none needs the driver to load).
CUDA_LIBRARIES = (
    "nvJitLink", "cudart", "cublasLt", "cublas", "cufft", "curand", "cusparse", "cusolver",
    "cudnn", "nccl",
)  # fmt: skip
FALLBACK_LINE = "no GPU found: training on the CPU (float32)"


@pytest.fixture(scope="module")
def gpu_image() -> str:
    return image_named_by("FAUNA_GPU_IMAGE", "make image-test-gpu")


PROBE = """
import ctypes, glob, json, os, sysconfig
import tensorflow as tf
site = sysconfig.get_path("purelib")
info = tf.sysconfig.get_build_info()
found = {}
for stem in %r:
    paths = sorted(glob.glob(f"{site}/nvidia/*/lib/lib{stem}.so.*"))
    if paths:
        ctypes.CDLL(paths[0], mode=ctypes.RTLD_GLOBAL)  # loads without a driver
        found[stem] = os.path.basename(paths[0])
print(json.dumps({"version": tf.__version__, "cuda": tf.test.is_built_with_cuda(),
                  "cuda_version": info.get("cuda_version"),
                  "cudnn_version": info.get("cudnn_version"), "libraries": found,
                  "gpus": len(tf.config.list_physical_devices("GPU"))}))
"""


def test_tensorflow_imports_with_the_cuda_libraries_it_was_built_for(gpu_image):
    done = docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", gpu_image,
        "-c", PROBE % (CUDA_LIBRARIES,),
    )  # fmt: skip
    found = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\n{found}")
    assert found["cuda"] is True, found
    assert set(found["libraries"]) == set(CUDA_LIBRARIES), found["libraries"]
    cuda_major = str(found["cuda_version"]).split(".")[0]
    cudnn_major = str(found["cudnn_version"]).split(".")[0]
    assert found["libraries"]["cudart"].startswith(f"libcudart.so.{cuda_major}"), found
    assert found["libraries"]["cudnn"].startswith(f"libcudnn.so.{cudnn_major}"), found


def test_without_a_gpu_training_says_so_and_finishes_on_the_cpu(gpu_image, tmp_path: Path):
    """One epoch of a small backbone on generated 32 px photos, offline, no GPU given."""
    work = shared_folder(tmp_path / "work")
    script = TRAIN_A_TINY_MODEL
    done = docker(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
        "-v", f"{work}:/work", "--entrypoint", "sh", gpu_image, "-c", script,
        timeout=900,
    )  # fmt: skip
    assert FALLBACK_LINE in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert (work / "model" / "export").is_dir(), sorted(p.name for p in (work / "model").iterdir())
