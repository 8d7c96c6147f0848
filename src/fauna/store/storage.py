"""The one storage layer: S3 and MinIO through boto3.

The endpoint comes from `S3_ENDPOINT_URL` (MinIO, or the embedded test server);
credentials from the standard AWS chain (env, files, instance role). Nothing here
logs or stores a credential.

This module is the storage API every caller uses: buckets, objects, conditional writes
and parallel transfers. The shared client, its per-call deadline and the translation of
botocore's errors into one line live in `fauna.store.s3client` (re-exported here: `client`,
`StorageError`, `PreconditionFailed`, `StorageUnavailable`, `parse_s3_uri`, ...).

Conditional writes (`write_text(..., if_match=etag)` / `if_none_match=True`) make a
compare-and-swap of a small pointer object; a lost race raises `PreconditionFailed`.
Whether a store enforces them is checked (`fauna.store.conditional_writes`) before a
champion moves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path, PurePosixPath

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from s3transfer.subscribers import BaseSubscriber

from fauna import timing
from fauna.logs import progress
from fauna.store.s3client import (  # noqa: F401  (re-exported: fauna.store.storage is the public API)
    DEFAULT_TIMEOUT_SECONDS,
    MAX_ATTEMPTS,
    MAX_CONCURRENCY,
    TIMEOUT_ENV,
    PreconditionFailed,
    S3Uri,
    StorageError,
    StorageUnavailable,
    _bucket_exists,
    _explain,
    _is_missing,
    _is_precondition_failure,
    _one_line,
    _translated,
    clear_clients,
    client,
    endpoint_name,
    is_s3_uri,
    parse_s3_uri,
    timeout_seconds,
)

log = logging.getLogger(__name__)

# Multipart above 64 MiB, in 64 MiB parts: large shards and models upload in pieces.
TRANSFER = TransferConfig(
    multipart_threshold=64 * 2**20,
    multipart_chunksize=64 * 2**20,
    max_concurrency=MAX_CONCURRENCY,
)
PROBE_PREFIX = ".fauna-access-probe-"


# ---------------------------------------------------------------------------------------
# Buckets and access.


def ensure_bucket(bucket: str, s3=None) -> None:
    s3 = s3 or client()
    uri = f"s3://{bucket}"
    with _translated(uri, s3):
        try:
            s3.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if not _is_missing(exc):
                raise
        try:
            s3.create_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise


def check_bucket(uri: str, s3=None) -> None:
    """Fail early, in one line, when the endpoint is down or the bucket is missing."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    with _translated(f"s3://{loc.bucket}", s3):
        try:
            s3.head_bucket(Bucket=loc.bucket)
        except ClientError as exc:
            if _is_missing(exc) or exc.response["Error"].get("Code") == "NoSuchBucket":
                raise StorageError(f"bucket does not exist: s3://{loc.bucket}") from None
            raise


def check_access(uri: str, write: bool = False, s3=None) -> None:
    """Before long work: the bucket exists, the prefix can be listed and (write) written.

    The write check puts a tiny probe object under the prefix and deletes it again.
    Raises StorageError with one line; returns None when all is well.
    """
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    check_bucket(uri, s3=s3)
    prefix = loc.key + "/" if loc.key else ""
    with _translated(uri, s3):
        s3.list_objects_v2(Bucket=loc.bucket, Prefix=prefix, MaxKeys=1)
    if not write:
        return
    probe = str(loc.join(f"{PROBE_PREFIX}{uuid.uuid4().hex}"))
    try:
        with _translated(probe, s3):
            s3.put_object(Bucket=loc.bucket, Key=parse_s3_uri(probe).key, Body=b"probe")
    except StorageError as exc:
        raise StorageError(f"cannot write under {uri}: {exc}") from None
    try:
        with _translated(probe, s3):
            s3.delete_object(Bucket=loc.bucket, Key=parse_s3_uri(probe).key)
    except StorageError as exc:  # writing works; an append-only bucket may refuse deletes
        log.warning("could not delete the access probe %s: %s", probe, exc)


# ---------------------------------------------------------------------------------------
# Objects.


def list_keys(uri: str, s3=None) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under a prefix."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    prefix = loc.key + "/" if loc.key and not loc.key.endswith("/") else loc.key
    with _translated(uri, s3):
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["Size"]


def exists(uri: str, s3=None) -> bool:
    """True if the object exists, False if not; StorageError for a missing bucket or a failure."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    with _translated(uri, s3):
        try:
            s3.head_object(Bucket=loc.bucket, Key=loc.key)
            return True
        except ClientError as exc:
            if not _is_missing(exc):
                raise
    if not _bucket_exists(loc.bucket, s3):
        raise StorageError(f"bucket does not exist: s3://{loc.bucket}")
    return False


def upload_file(path: str | Path, uri: str, s3=None) -> None:
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    with _translated(uri, s3), _transfer_manager(s3) as transfers:
        transfers.upload(str(path), loc.bucket, loc.key).result()


def download_file(uri: str, path: str | Path, s3=None) -> Path:
    """Download one object; the file appears complete or not at all (temp name, rename)."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _translated(uri, s3), _transfer_manager(s3) as transfers:
        transfers.download(loc.bucket, loc.key, str(path)).result()
    return path


def read_text(uri: str, s3=None) -> str:
    found = _get_text(uri, s3 or client())
    if found is None:
        raise StorageError(f"no such object: {uri}")
    return found[0]


def read_text_with_etag(uri: str, s3=None) -> tuple[str, str] | None:
    """(text, etag) of an object, or None if (and only if) the object does not exist.

    A missing bucket, an outage or a timeout raise StorageError: never read them as
    "missing" (a pointer that cannot be read is not an absent pointer).
    """
    return _get_text(uri, s3 or client())


def _get_text(uri: str, s3) -> tuple[str, str] | None:
    loc = parse_s3_uri(uri)
    with _translated(uri, s3):
        try:
            response = s3.get_object(Bucket=loc.bucket, Key=loc.key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                if not _bucket_exists(loc.bucket, s3):
                    raise StorageError(f"bucket does not exist: s3://{loc.bucket}") from None
                return None
            raise
        return response["Body"].read().decode("utf-8"), response["ETag"]


def write_text(
    uri: str,
    text: str,
    s3=None,
    content_type: str = "text/plain",
    *,
    if_match: str | None = None,
    if_none_match: bool = False,
) -> str:
    """Write a small text object; returns its new ETag.

    `if_match=etag` writes only if the object still has that ETag (from
    `read_text_with_etag`); `if_none_match=True` writes only if no object exists.
    A lost condition raises PreconditionFailed (HTTP 412, or 409 for a concurrent
    conditional write). If botocore had to retry the request and the object now holds
    exactly `text`, our earlier attempt landed and its reply was lost: that counts as
    written.
    """
    if if_match is not None and if_none_match:
        raise ValueError("write_text: give if_match or if_none_match, not both")
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    conditions: dict[str, str] = {}
    if if_match is not None:
        conditions["IfMatch"] = if_match
    if if_none_match:
        conditions["IfNoneMatch"] = "*"
    with _translated(uri, s3):
        try:
            response = s3.put_object(
                Bucket=loc.bucket,
                Key=loc.key,
                Body=text.encode("utf-8"),
                ContentType=content_type,
                **conditions,
            )
            return response["ETag"]
        except ClientError as exc:
            if not conditions:
                raise
            return _settle_conditional_failure(exc, uri, text, s3)


def _settle_conditional_failure(exc: ClientError, uri: str, text: str, s3) -> str:
    """A refused conditional write: ours if a retried attempt already landed, else raise."""
    missing = exc.response.get("Error", {}).get("Code") == "NoSuchKey"  # If-Match, key gone
    if not (missing or _is_precondition_failure(exc)):
        raise exc
    retried = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) > 0
    current = _get_text(uri, s3) if retried else None
    if current is not None and current[0] == text:
        log.info("conditional write to %s: an earlier attempt landed, its reply was lost", uri)
        return current[1]
    if missing:
        raise PreconditionFailed(
            f"conditional write to {uri} refused: the object was deleted since it was read"
        )
    raise _explain(exc, uri, s3)


def local_files(local_dir: str | Path, exclude: tuple[str, ...] = ()) -> dict[str, int]:
    """{relative path: size} of the files under a folder (but top-level `exclude` folders)."""
    return {
        p.relative_to(local_dir).as_posix(): p.stat().st_size
        for p in Path(local_dir).rglob("*")
        if p.is_file() and p.relative_to(local_dir).parts[0] not in exclude
    }


def remote_files(uri: str, s3=None) -> dict[str, int]:
    """{relative key: size} of the objects under a prefix."""
    prefix = parse_s3_uri(uri).key + "/"
    return {key[len(prefix) :]: size for key, size in list_keys(uri, s3=s3)}


@timing.timed("data_out")  # a task's upload time, in its timings.json
def upload_verified(local_dir: str | Path, uri: str, exclude: tuple[str, ...] = ()) -> int:
    """Upload a folder and check every file arrived whole (names and sizes in a listing)."""
    n = upload_dir(local_dir, uri, exclude=exclude)
    local, remote = local_files(local_dir, exclude), remote_files(uri)
    missing = sorted(name for name, size in local.items() if remote.get(name) != size)
    if missing:  # another attempt may well work: transient
        raise StorageUnavailable(
            f"uploaded {uri} but {len(missing)} file(s) are not there whole: "
            f"{', '.join(missing[:5])}"
        )
    return n


def delete(uri: str, s3=None) -> None:
    """Delete one object (no error if it is already gone)."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    with _translated(uri, s3):
        s3.delete_object(Bucket=loc.bucket, Key=loc.key)


def delete_prefix(uri: str, s3=None) -> int:
    """Delete every object under a prefix; returns how many."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    keys = [key for key, _size in list_keys(uri, s3=s3)]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        with _translated(uri, s3):
            response = s3.delete_objects(
                Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True}
            )
        for failed in response.get("Errors", [])[:1]:
            raise StorageError(
                f"could not delete s3://{loc.bucket}/{failed.get('Key')}: "
                f"{failed.get('Code')} {_one_line(failed.get('Message', ''))}"
            )
    return len(keys)


# ---------------------------------------------------------------------------------------
# Many files at once: one transfer manager over the shared client.


def _transfer_manager(s3):
    """boto3's transfer manager over `s3`: parallel files and parts, bounded memory.

    Used as a context manager: on an exception it cancels the transfers still running
    (its own __exit__; `shutdown(cancel=True)` is broken in s3transfer 0.19.3).
    """
    from s3transfer.manager import TransferManager

    return TransferManager(s3, TRANSFER)


def _wait_all(transfers: list[tuple[Future, str]], what: str, s3) -> None:
    """Wait for every transfer in order (the first failure raises, naming its key)."""
    with progress(total=len(transfers), desc=what, unit="file", log=log, leave=False) as bar:
        for future, uri in transfers:
            with _translated(uri, s3):
                future.result()
            bar.update(1)


def upload_dir(local_dir: str | Path, uri: str, s3=None, exclude: tuple[str, ...] = ()) -> int:
    """Upload every file under `local_dir` (but top-level `exclude` folders) to the prefix.

    Files move in parallel (MAX_CONCURRENCY at once). Returns the number of files uploaded.
    """
    local_dir = Path(local_dir)
    base = parse_s3_uri(uri)
    s3 = s3 or client()
    files = [
        (path, str(base.join(path.relative_to(local_dir).as_posix())))
        for path in sorted(p for p in local_dir.rglob("*") if p.is_file())
        if path.relative_to(local_dir).parts[0] not in exclude
    ]
    started = time.monotonic()
    with _translated(uri, s3), _transfer_manager(s3) as transfers:
        pending = [
            (transfers.upload(str(path), base.bucket, parse_s3_uri(target).key), target)
            for path, target in files
        ]
        _wait_all(pending, f"upload {uri}", s3)
    log.debug("uploaded %d files to %s in %.1f s", len(files), uri, time.monotonic() - started)
    return len(files)


def download_dir(uri: str, local_dir: str | Path, s3=None) -> int:
    """Download every object under the prefix, refusing keys that would escape `local_dir`.

    Every key is checked before anything is written; files move in parallel.
    """
    base = parse_s3_uri(uri)
    local_dir = Path(local_dir).resolve()
    s3 = s3 or client()
    prefix = base.key + "/" if base.key else ""
    wanted: list[tuple[str, int, Path]] = []
    for key, size in list_keys(uri, s3=s3):
        rel = key[len(prefix) :] if key.startswith(prefix) else key
        if not rel or rel.endswith("/"):
            continue
        target = (local_dir / PurePosixPath(rel)).resolve()
        if not target.is_relative_to(local_dir):
            raise StorageError(f"refusing S3 key that escapes the target folder: {key!r}")
        wanted.append((key, size, target))
    if not wanted:
        raise StorageError(f"nothing found under {uri}")
    for target in {target.parent for _key, _size, target in wanted}:
        target.mkdir(parents=True, exist_ok=True)
    with _translated(uri, s3), _transfer_manager(s3) as transfers:
        pending = [
            (
                transfers.download(base.bucket, key, str(target), subscribers=[_KnownSize(size)]),
                f"s3://{base.bucket}/{key}",
            )
            for key, size, target in wanted
        ]
        _wait_all(pending, f"download {uri}", s3)
    return len(wanted)


class _KnownSize(BaseSubscriber):
    """Tell the transfer manager the size from the listing: saves a HEAD per file."""

    def __init__(self, size: int):
        self.size = size

    def on_queued(self, future, **kwargs):
        future.meta.provide_transfer_size(self.size)
