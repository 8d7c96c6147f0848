"""The S3 client under `fauna.store.storage`: URIs, errors, one shared client, a per-call deadline.

Callers use `fauna.store.storage` (which re-exports what they need from here); this module holds
the part every storage call shares, so storage.py keeps only the operations.

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
- Every botocore error becomes a `StorageError` with one line naming the bucket or key;
  an outage (5xx or throttling after the retries, a timeout, an unreachable endpoint) is a
  `StorageUnavailable`, a `TransientError`: the command exits 75 and may be retried.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from boto3.exceptions import S3UploadFailedError
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
    ReadTimeoutError,
)

from fauna.errors import FaunaError, TransientError

log = logging.getLogger(__name__)

TIMEOUT_ENV = "FAUNA_S3_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS = 60.0
# Attempts per call (first one included); the deadline usually stops retries first.
MAX_ATTEMPTS = 10
# Files (or parts) moved at once by upload_dir/download_dir; the client's connection pool
# is sized to match so parallel transfers do not discard connections.
MAX_CONCURRENCY = 10


class StorageError(FaunaError):
    """A storage problem worth one clear line to the user (no traceback)."""


class PreconditionFailed(StorageError):
    """A conditional write lost: the object changed (or appeared) since it was read."""


class StorageUnavailable(StorageError, TransientError):
    """The store failed for now (5xx or throttling after the retries, timeout, unreachable)."""


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


def endpoint_name(s3) -> str:
    """The endpoint a client talks to, for messages: its URL, or "AWS S3"."""
    return getattr(getattr(s3, "meta", None), "endpoint_url", None) or "AWS S3"


def _explain(exc: Exception, uri: str, s3) -> StorageError:
    """Turn botocore's exceptions into one line a user can act on."""
    endpoint = endpoint_name(s3)
    if isinstance(exc, _DeadlineExceeded):
        return _explain_deadline(exc, uri, endpoint)
    if isinstance(exc, ClientError):
        return _explain_client_error(exc, uri, s3, endpoint)
    if isinstance(exc, _UNREACHABLE):
        return StorageUnavailable(
            f"cannot reach the S3 endpoint {endpoint} (for {uri}): is it running?"
        )
    if isinstance(exc, ReadTimeoutError):
        return StorageUnavailable(
            f"no answer from the S3 endpoint {endpoint} for {uri}: read timed out"
        )
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"no usable S3 credentials for {uri}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or an AWS profile or role)"
        )
    # Any other HTTP-level failure (a connection closed mid-answer, ...) may pass by itself.
    error = StorageUnavailable if isinstance(exc, HTTPClientError) else StorageError
    return error(f"S3 problem for {uri} at {endpoint}: {_one_line(exc)}")


def _explain_deadline(exc: _DeadlineExceeded, uri: str, endpoint: str) -> StorageError:
    attempts = f"{exc.attempts} attempt" + ("s" if exc.attempts != 1 else "")
    tried = f"{attempts} in {exc.elapsed:.1f} s, deadline {exc.deadline:g} s"
    advice = f"set {TIMEOUT_ENV} to wait longer"
    if isinstance(exc.exception, _UNREACHABLE):
        return StorageUnavailable(
            f"cannot reach the S3 endpoint {endpoint} (for {uri}; {tried}): is it running?"
        )
    if isinstance(exc.exception, ReadTimeoutError):
        return StorageUnavailable(
            f"no answer from the S3 endpoint {endpoint} for {uri} ({tried}): {advice}"
        )
    return StorageUnavailable(
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
    failed_for_now = status in (429, 500, 502, 503, 504) or code in _THROTTLING_CODES
    error = StorageUnavailable if failed_for_now or code in _TRANSIENT_CODES else StorageError
    return error(f"S3 error {code or status} for {uri} at {endpoint}{after}: {message}")


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
