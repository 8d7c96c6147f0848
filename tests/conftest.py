"""Shared fixtures: a real S3 HTTP endpoint (moto's server) and generated images."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """moto's ThreadedMotoServer on 127.0.0.1: the same HTTP code paths as MinIO."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Point the storage layer at the embedded server, with a fresh bucket; yields its name."""
    import uuid

    from fauna import storage

    monkeypatch.setenv("S3_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    storage.ensure_bucket(bucket)
    yield bucket


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
