"""The one way to run an embedded S3 server: moto's ThreadedMotoServer on 127.0.0.1.

Used by the tests and the local pipeline run. It speaks the same HTTP as MinIO and AWS
S3, including conditional writes (`If-Match`, `If-None-Match: *` on PutObject). moto
checks those headers but then writes in a separate step without a lock, so two
concurrent conditional writers can both succeed (and concurrent writes of one key can
even fail with a 500). `embedded_s3_server` serialises moto's object writes with one
lock, which makes the check and the write one atomic step, as on a real server.

moto is a test extra (`pip install -e '.[test]'`); it is imported only when a server starts.

    with embedded_s3_server() as endpoint:   # "http://127.0.0.1:<free port>"
        os.environ["S3_ENDPOINT_URL"] = endpoint
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from fauna.errors import FaunaError

# moto's S3Response methods that change objects; each runs under WRITE_LOCK.
_OBJECT_WRITES = ("put_object", "delete_object", "_key_response_post", "copy_object")
WRITE_LOCK = threading.RLock()
_patch_lock = threading.Lock()


@contextmanager
def embedded_s3_server(host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Start moto's S3 server (a free port by default); yields its endpoint URL."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        raise FaunaError(
            "the embedded S3 server needs moto: pip install -e '.[test]' (or set S3_ENDPOINT_URL)"
        ) from None
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise
    make_conditional_writes_atomic()
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    try:
        bound_host, bound_port = server.get_host_and_port()
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.stop()


def make_conditional_writes_atomic() -> None:
    """Wrap moto's object writes in one lock (once per process; idempotent)."""
    from moto.s3.responses import S3Response

    with _patch_lock:
        for name in _OBJECT_WRITES:
            method = getattr(S3Response, name)
            if getattr(method, "_fauna_locked", False):
                continue
            setattr(S3Response, name, _locked(method))


def _locked(method):
    @functools.wraps(method)
    def write_under_lock(*args, **kwargs):
        with WRITE_LOCK:
            return method(*args, **kwargs)

    write_under_lock._fauna_locked = True
    return write_under_lock
