"""Shared fixtures: a real S3 HTTP endpoint (moto's server), generated images, and the
tiny real Keras model of the steps after train (test_evaluate's, used by test_tsne too)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture
def deterministic_ops() -> Iterator[None]:
    """TensorFlow op determinism for a learning test: every run on one machine gives the
    same numbers (CPUs still differ: thresholds keep a margin, docs/training.md)."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    yield
    if not was:
        tf_config.disable_op_determinism()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The embedded S3 server (moto) on 127.0.0.1: the same HTTP code paths as MinIO."""
    from fauna.store.embedded_s3 import embedded_s3_server

    with embedded_s3_server() as endpoint:
        yield endpoint


def _test_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the storage layer at the embedded server, with a fresh bucket; yields its name."""
    import uuid

    from fauna.store import storage

    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    _test_credentials(monkeypatch)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(bucket)
    yield bucket


@pytest.fixture
def faulty_s3(s3_server: str, monkeypatch: pytest.MonkeyPatch):
    """The embedded S3 behind a fault-injection proxy (tests/faults.py), with a fresh bucket.

    Yields a `faults.FaultyS3`: `.proxy` (controls: always, fail_every, fail_next,
    cut_after, latency, only, reset; counters), `.bucket`, `.uri(key)`, `.upstream` (the
    server itself, to check state past the faults). S3_ENDPOINT_URL points at the proxy,
    which starts healthy; FAUNA_S3_TIMEOUT_SECONDS is 10 unless the test sets it.
    """
    import uuid

    from faults import FaultProxy, FaultyS3

    from fauna.store import storage

    _test_credentials(monkeypatch)
    monkeypatch.setenv(storage.TIMEOUT_ENV, os.environ.get(storage.TIMEOUT_ENV, "10"))
    bucket = f"faulty-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(bucket, s3=storage.client(s3_server))
    with FaultProxy(s3_server) as proxy:
        monkeypatch.setenv("S3_ENDPOINT_URL", proxy.endpoint)
        yield FaultyS3(proxy=proxy, bucket=bucket, upstream=s3_server)
    storage.clear_clients()  # the proxy's port is gone: drop its client and connections


# What the kind scripts may call in a dry run; docker, kind, kubectl and helm stay out of reach.
DRY_RUN_TOOLS = (
    "bash",
    "sh",
    "echo",
    "git",
    "make",
    "dirname",
    "mktemp",
    "rm",
    "grep",
    "sed",
    "tee",
    "tail",
    "cat",
)


@pytest.fixture(scope="session")
def bare_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH with only basic tools: the cluster tools are absent, as on this machine."""
    import shutil

    bindir = tmp_path_factory.mktemp("bin")
    for tool in DRY_RUN_TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is needed to run the dry run"
        (bindir / tool).symlink_to(found)
    return str(bindir)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated split dataset in the train step's contracts (test_evaluate.make_dataset_dir)."""
    from test_evaluate import make_dataset_dir

    return make_dataset_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    """A tiny model trained 8 epochs on `dataset`, saved like train's output (a test file
    may define its own `model_dir`, as test_predict does)."""
    from test_evaluate import make_model_dir

    return make_model_dir(tmp_path_factory.mktemp("m") / "tiny", dataset, "tiny", 8, 1e-2)
