"""The one storage layer: S3 and MinIO through boto3.

The endpoint comes from `S3_ENDPOINT_URL` (MinIO, or the embedded test server);
credentials from the standard AWS chain (env, files, instance role). Nothing here
logs or stores a credential.

One client per (process, endpoint, region, deadline) is created once, under a lock, and
reused: boto3 clients are thread-safe, sessions are not.

Failures are fast and honest:

- `FAUNA_S3_TIMEOUT_SECONDS` (default 60) is the deadline of one S3 call, retries
  included: a retry that could not end before it (longest backoff + as long as the last
  attempt took) is not started. Each attempt waits at most a quarter of the deadline
  (1..5 s to connect, 1..15 s per socket read), so an endpoint that accepts connections
  but never answers fails within the deadline, in one line. Big transfers are bounded per
  call (per part of a multipart transfer), not in total.
- 5xx, SlowDown/throttling, timeouts and dropped connections are retried (botocore's
  "standard" mode, up to `MAX_ATTEMPTS` attempts within the deadline).
- Every botocore error becomes a `StorageError` with one line naming the bucket or key.

Conditional writes (`write_text(..., if_match=etag)` / `if_none_match=True`) make a
compare-and-swap of a small pointer object; a lost race raises `PreconditionFailed`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)
from s3transfer.subscribers import BaseSubscriber

from fauna.errors import FaunaError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "FAUNA_S3_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 60.0
# Attempts per call (first one included); the deadline usually stops retries first.
MAX_ATTEMPTS = 10
# Files (or parts) moved at once by upload_dir/download_dir; the client's connection pool
# is sized to match so parallel transfers do not discard connections.
MAX_CONCURRENCY = 10
# Multipart above 64 MiB, in 64 MiB parts: large shards and models upload in pieces.
TRANSFER = TransferConfig(
    multipart_threshold=64 * 2**20,
    multipart_chunksize=64 * 2**20,
    max_concurrency=MAX_CONCURRENCY,
)
PROBE_PREFIX = ".fauna-access-probe-"


class StorageError(FaunaError):
    """A storage problem worth one clear line to the user (no traceback)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class _DeadlineExceeded(Exception):
    """Raised inside botocore when another attempt could not end before the call's deadline."""

    def __init__(self, deadline: float, elapsed: float, attempts: int, failure: str, exc=None):
        super().__init__(f"gave up after {attempts} attempts in {elapsed:.1f} s")
        self.deadline = deadline
        self.elapsed = elapsed
        self.attempts = attempts
        self.failure = failure  # the last attempt's failure, e.g. "HTTP 503 SlowDown"
        self.exception = exc  # the last attempt's exception, if it raised one


@dataclass(frozen=True)
class S3Uri:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def join(self, *parts: str) -> S3Uri:
        key = "/".join(p.strip("/") for p in (self.key, *parts) if p.strip("/"))
        return S3Uri(self.bucket, key)


def is_s3_uri(text: str) -> bool:
    return text.startswith("s3://")


def parse_s3_uri(uri: str) -> S3Uri:
    """`s3://bucket/some/key` -> S3Uri("bucket", "some/key"), with clear errors."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise StorageError(f"not an S3 URI (expected s3://bucket/key): {uri!r}")
    rest = uri[len("s3://") :]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"S3 URI has no bucket: {uri!r}")
    if not (3 <= len(bucket) <= 63) or not all(
        c.islower() or c.isdigit() or c in ".-" for c in bucket
    ):
        raise StorageError(f"invalid S3 bucket name {bucket!r} in {uri!r}")
    return S3Uri(bucket, key.strip("/"))


# ---------------------------------------------------------------------------------------
# The client: one per process/endpoint/region/deadline, with a per-call deadline.


def timeout_seconds() -> float:
    """The per-call deadline from `FAUNA_S3_TIMEOUT_SECONDS` (default 60 s)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise StorageError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {text!r}")
    return value


_CLIENTS: dict[tuple, object] = {}
_CLIENTS_LOCK = threading.Lock()


def client(endpoint_url: str | None = None):
    """The shared boto3 S3 client: standard retries, a per-call deadline, path-style for MinIO."""
    endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    deadline = timeout_seconds()
    key = (os.getpid(), endpoint, region, deadline)
    with _CLIENTS_LOCK:
        s3 = _CLIENTS.get(key)
        if s3 is None:
            s3 = _CLIENTS[key] = _new_client(endpoint, region, deadline)
    return s3


def clear_clients() -> None:
    """Forget the cached clients (after credentials changed, or in tests)."""
    with _CLIENTS_LOCK:
        _CLIENTS.clear()


def _new_client(endpoint: str | None, region: str, deadline: float):
    import boto3
    from botocore.config import Config as BotoConfig

    cfg = BotoConfig(
        retries={"total_max_attempts": MAX_ATTEMPTS, "mode": "standard"},
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=min(5.0, max(1.0, deadline / 4)),
        read_timeout=min(15.0, max(1.0, deadline / 4)),
        max_pool_connections=MAX_CONCURRENCY + 6,
    )
    session = boto3.session.Session()
    s3 = session.client("s3", endpoint_url=endpoint, region_name=region, config=cfg)
    guard = _DeadlineGuard(deadline)
    s3.meta.events.register_first("needs-retry.s3", guard.before_retry)
    s3.meta.events.register("before-send.s3", guard.before_send)
    return s3


# Error codes botocore's standard mode retries; throttling ones back off from 1 s, others
# from 50 ms (t_i = rand(0, 1) * min(scale * 2**i, 20 s)).
_THROTTLING_CODES = frozenset(
    "Throttling ThrottlingException ThrottledException RequestThrottledException "
    "TooManyRequestsException RequestLimitExceeded BandwidthLimitExceeded RequestThrottled "
    "SlowDown ProvisionedThroughputExceededException".split()
)
_TRANSIENT_CODES = frozenset(
    {"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"}
)
_MAX_BACKOFF = 20.0


class _DeadlineGuard:
    """Per-call deadline over botocore's retries (hooks on one client's events).

    before_send starts the clock on the first attempt and notes when each attempt starts.
    before_retry runs before the standard retry handler: when a retryable failure's next
    attempt (longest backoff + as long as the last attempt took) could not end before the
    deadline, it gives up with _DeadlineExceeded instead of sleeping past it.
    """

    def __init__(self, deadline: float):
        self.deadline = deadline

    def before_send(self, request=None, **_kwargs):
        context = getattr(request, "context", None)
        if context is not None:
            now = time.monotonic()
            context.setdefault("fauna_started_at", now)
            context["fauna_attempt_started_at"] = now
        return None

    def before_retry(self, request_dict=None, response=None, caught_exception=None, **kwargs):
        context = (request_dict or {}).get("context")
        attempts = kwargs.get("attempts", 1)
        if context is None or "fauna_started_at" not in context or attempts >= MAX_ATTEMPTS:
            return None
        failure, throttled = _describe_failure(response, caught_exception)
        if failure is None:
            return None  # success or a definite answer (404, 412...): nothing to retry
        now = time.monotonic()
        backoff = min((1.0 if throttled else 0.05) * 2 ** (attempts - 1), _MAX_BACKOFF)
        last_attempt = now - context["fauna_attempt_started_at"]
        elapsed = now - context["fauna_started_at"]
        if elapsed + backoff + last_attempt > self.deadline:
            raise _DeadlineExceeded(self.deadline, elapsed, attempts, failure, caught_exception)
        return None


def _describe_failure(response, caught_exception) -> tuple[str | None, bool]:
    """("HTTP 503 SlowDown" or the exception's name, throttled) if retryable, else (None, _)."""
    if caught_exception is not None:
        return type(caught_exception).__name__, False
    if response is None:
        return None, False
    status = response[0].status_code
    code = str(response[1].get("Error", {}).get("Code", ""))
    throttled = code in _THROTTLING_CODES or status in (429, 503)
    if not (throttled or status in (500, 502, 503, 504) or code in _TRANSIENT_CODES):
        return None, False
    label = f"HTTP {status} {code}" if code and code != str(status) else f"HTTP {status}"
    return label, throttled


# ---------------------------------------------------------------------------------------
# One translation of botocore's errors into one line.


@contextmanager
def _translated(uri: str, s3) -> Iterator[None]:
    """Run S3 calls for `uri`; any botocore failure becomes one `StorageError` line."""
    try:
        yield
    except StorageError:
        raise
    except (ClientError, BotoCoreError, S3UploadFailedError, _DeadlineExceeded) as exc:
        raise _explain(exc, uri, s3) from None


_UNREACHABLE = (EndpointConnectionError, ConnectTimeoutError)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _explain(exc: Exception, uri: str, s3) -> StorageError:
    """Turn botocore's exceptions into one line a user can act on."""
    endpoint = getattr(getattr(s3, "meta", None), "endpoint_url", None) or "AWS S3"
    if isinstance(exc, _DeadlineExceeded):
        return _explain_deadline(exc, uri, endpoint)
    if isinstance(exc, ClientError):
        return _explain_client_error(exc, uri, s3, endpoint)
    if isinstance(exc, _UNREACHABLE):
        return StorageError(f"cannot reach the S3 endpoint {endpoint} (for {uri}): is it running?")
    if isinstance(exc, ReadTimeoutError):
        return StorageError(f"no answer from the S3 endpoint {endpoint} for {uri}: read timed out")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no usable S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or an AWS profile or role)"
        )
    return StorageError(f"S3 problem for {uri} at {endpoint}: {_one_line(exc)}")


def _explain_deadline(exc: _DeadlineExceeded, uri: str, endpoint: str) -> StorageError:
    attempts = f"{exc.attempts} attempt" + ("s" if exc.attempts != 1 else "")
    tried = f"{attempts} in {exc.elapsed:.1f} s, deadline {exc.deadline:g} s"
    advice = f"set {TIMEOUT_ENV} to wait longer"
    if isinstance(exc.exception, _UNREACHABLE):
        return StorageError(
            f"cannot reach the S3 endpoint {endpoint} (for {uri}; {tried}): is it running?"
        )
    if isinstance(exc.exception, ReadTimeoutError):
        return StorageError(
            f"no answer from the S3 endpoint {endpoint} for {uri} ({tried}): {advice}"
        )
    return StorageError(
        f"the S3 endpoint {endpoint} kept failing for {uri} ({tried}; last: {exc.failure}): "
        f"{advice}"
    )


def _explain_client_error(exc: ClientError, uri: str, s3, endpoint: str) -> StorageError:
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    loc = parse_s3_uri(uri)
    if code == "NoSuchBucket":
        return StorageError(f"bucket does not exist: s3://{loc.bucket}")
    if code in ("404", "NoSuchKey", "NotFound"):
        if loc.key and not _bucket_exists(loc.bucket, s3):
            return StorageError(f"bucket does not exist: s3://{loc.bucket}")
        return StorageError(f"no such object: {uri}")
    if _is_precondition_failure(exc):
        return PreconditionFailed(
            f"conditional write to {uri} refused ({code or status}): it changed since it was read"
        )
    if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return StorageError(f"access denied to {uri} ({code}): check the S3 credentials")
    retries = exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0)
    after = f" after {retries + 1} attempts" if retries else ""
    message = _one_line(error.get("Message", ""))
    return StorageError(f"S3 error {code or status} for {uri} at {endpoint}{after}: {message}")


def _bucket_exists(bucket: str, s3) -> bool:
    """A HEAD 404 names no cause: tell a missing bucket from a missing key (True if unsure)."""
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        return exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound")
    except (BotoCoreError, _DeadlineExceeded):
        return True
    return True


def _is_precondition_failure(exc: ClientError) -> bool:
    """412 PreconditionFailed, or 409 ConditionalRequestConflict (concurrent conditional writes)."""
    code = exc.response.get("Error", {}).get("Code")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412


def _is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


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
    from tqdm import tqdm

    with tqdm(total=len(transfers), desc=what, unit="file", disable=None, leave=False) as bar:
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
