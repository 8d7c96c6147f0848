"""Does the store enforce conditional writes? Checked before a champion pointer first moves.

The champion's compare-and-swap (`fauna.store.champion.move_pointer`) is only safe on a store
that *enforces* `If-None-Match: *` and `If-Match: <etag>` on PutObject. Some S3-compatible
stores accept the headers and ignore them (SeaweedFS before 3.97 answered 200 to
`If-None-Match: *` on an existing key, seaweedfs/seaweedfs#7153): there two publishes
could both "win". So, once per endpoint, bucket and process, a probe object proves it:

1. write a new probe key with `If-None-Match: *` (must succeed),
2. write it again with `If-None-Match: *` (must be refused: 412 or 409),
3. write it with `If-Match` and a wrong ETag (must be refused),

then delete the probe. A store that lets step 2 or 3 through is refused in one line
naming the store and what it lacks. `fauna check-store s3://bucket` runs the same probe.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any

from fauna.errors import FaunaError
from fauna.store import storage

log = logging.getLogger(__name__)

PROBE_PREFIX = ".fauna-store-check-"
# An ETag no object of the probe can have (the MD5 of nothing is d41d8cd9...).
WRONG_ETAG = '"00000000000000000000000000000000"'
DOCS = "docs/reliability.md, 'Stores that pass'"

_checked: set[tuple[str, str]] = set()
_lock = threading.Lock()


class StoreCheckError(FaunaError):
    """The store does not enforce conditional writes: the champion cannot move safely."""


def _lacks(endpoint: str, bucket: str, what: str) -> StoreCheckError:
    return StoreCheckError(
        f"the store at {endpoint} (bucket {bucket}) does not enforce conditional writes: "
        f"{what}; the champion pointer is not moved on such a store (see {DOCS})"
    )


def _refused(uri: str, text: str, **condition: Any) -> bool:
    """True when the store refuses this conditional write (412/409), False when it writes."""
    try:
        storage.write_text(uri, text, **condition)
    except storage.PreconditionFailed:
        return True
    return False


def probe(bucket: str) -> None:
    """Run the three writes on a fresh probe key; raise StoreCheckError if one gets through.

    A transient failure (outage) raises StorageUnavailable: nothing is known yet.
    """
    s3 = storage.client()
    endpoint = storage.endpoint_name(s3)
    uri = f"s3://{bucket}/{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        storage.write_text(uri, "1", if_none_match=True)
    except storage.StorageUnavailable:
        raise
    except storage.StorageError as exc:  # access denied, or the header not implemented
        raise StoreCheckError(
            f"the store at {endpoint} (bucket {bucket}) refused a PutObject with "
            f'"If-None-Match: *" on a new key: {exc}'
        ) from None
    try:
        if not _refused(uri, "2", if_none_match=True):
            what = 'a second PutObject with "If-None-Match: *" on an existing key was accepted'
            raise _lacks(endpoint, bucket, what)
        if not _refused(uri, "3", if_match=WRONG_ETAG):
            what = 'a PutObject with "If-Match" and a wrong ETag was accepted'
            raise _lacks(endpoint, bucket, what)
    except storage.StorageUnavailable:
        raise
    except storage.StorageError as exc:  # e.g. 501 NotImplemented for the header
        raise _lacks(endpoint, bucket, f"a conditional PutObject failed ({exc})") from None
    finally:
        _remove(uri)
    log.info("the store at %s enforces conditional writes (bucket %s)", endpoint, bucket)


def _remove(uri: str) -> None:
    try:
        storage.delete(uri)
    except storage.StorageError as exc:  # an append-only bucket may refuse it: it is tiny
        log.warning("could not delete the store-check probe %s: %s", uri, exc)


def require_conditional_writes(bucket: str) -> None:
    """Probe the store once per endpoint, bucket and process (later calls return at once)."""
    key = (storage.endpoint_name(storage.client()), bucket)
    with _lock:
        if key in _checked:
            return
        probe(bucket)
        _checked.add(key)


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument("bucket", metavar="s3://BUCKET", help="the bucket to probe")


def run(args: Any, cfg: Any) -> int:
    bucket = storage.parse_s3_uri(args.bucket).bucket
    storage.check_bucket(f"s3://{bucket}")
    probe(bucket)
    endpoint = storage.endpoint_name(storage.client())
    print(
        f"ok: the store at {endpoint} (bucket {bucket}) enforces If-None-Match: * and "
        "If-Match on PutObject: the champion can move safely"
    )
    return 0
