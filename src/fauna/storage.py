"""The one storage layer: S3 and MinIO through boto3.

The endpoint comes from `S3_ENDPOINT_URL` (MinIO, or the embedded test server);
credentials from the standard AWS chain (env, files, instance role). Nothing here
logs or stores a credential.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from fauna.errors import FaunaError

# Multipart above 64 MiB, in 64 MiB parts: large shards and models upload in pieces.
TRANSFER = TransferConfig(multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20)


class StorageError(FaunaError):
    """A storage problem worth one clear line to the user (no traceback)."""


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


def client(endpoint_url: str | None = None):
    """A boto3 S3 client: adaptive retries, path-style addressing for MinIO."""
    endpoint = endpoint_url or os.environ.get("S3_ENDPOINT_URL") or None
    cfg = BotoConfig(
        retries={"max_attempts": 5, "mode": "adaptive"},
        s3={"addressing_style": "path"} if endpoint else {},
        connect_timeout=5,
        read_timeout=60,
    )
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, config=cfg)


def _explain(exc: Exception, uri: str) -> StorageError:
    """Turn botocore's exceptions into one line a user can act on."""
    if isinstance(exc, EndpointConnectionError):
        endpoint = os.environ.get("S3_ENDPOINT_URL", "AWS S3")
        return StorageError(f"cannot reach the S3 endpoint {endpoint} (for {uri}): is it running?")
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket",):
            return StorageError(f"bucket does not exist: {uri}")
        if code in ("404", "NoSuchKey", "NotFound"):
            return StorageError(f"no such object: {uri}")
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return StorageError(f"access denied to {uri} ({code}): check the S3 credentials")
        return StorageError(
            f"S3 error {code} for {uri}: {exc.response.get('Error', {}).get('Message', '')}"
        )
    if isinstance(exc, BotoCoreError):
        return StorageError(f"S3 problem for {uri}: {exc}")
    return StorageError(f"S3 problem for {uri}: {exc}")


def ensure_bucket(bucket: str, s3=None) -> None:
    s3 = s3 or client()
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
            raise _explain(exc, f"s3://{bucket}") from None
    except (BotoCoreError, EndpointConnectionError) as exc:
        raise _explain(exc, f"s3://{bucket}") from None
    try:
        s3.create_bucket(Bucket=bucket)
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, f"s3://{bucket}") from None


def check_bucket(uri: str, s3=None) -> None:
    """Fail early, in one line, when the endpoint is down or the bucket is missing."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    try:
        s3.head_bucket(Bucket=loc.bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(f"bucket does not exist: s3://{loc.bucket}") from None
        raise _explain(exc, uri) from None
    except (BotoCoreError, EndpointConnectionError) as exc:
        raise _explain(exc, uri) from None


def list_keys(uri: str, s3=None) -> Iterator[tuple[str, int]]:
    """(key, size) of every object under a prefix."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    prefix = loc.key + "/" if loc.key and not loc.key.endswith("/") else loc.key
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                yield obj["Key"], obj["Size"]
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, uri) from None


def exists(uri: str, s3=None) -> bool:
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    try:
        s3.head_object(Bucket=loc.bucket, Key=loc.key)
        return True
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _explain(exc, uri) from None
    except BotoCoreError as exc:
        raise _explain(exc, uri) from None


def upload_file(path: str | Path, uri: str, s3=None) -> None:
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    try:
        s3.upload_file(str(path), loc.bucket, loc.key, Config=TRANSFER)
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, uri) from None
    except boto3.exceptions.S3UploadFailedError as exc:
        raise StorageError(f"upload to {uri} failed: {exc}") from None


def download_file(uri: str, path: str | Path, s3=None) -> Path:
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        s3.download_file(loc.bucket, loc.key, str(path), Config=TRANSFER)
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, uri) from None
    return path


def read_text(uri: str, s3=None) -> str:
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    try:
        return s3.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read().decode("utf-8")
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, uri) from None


def write_text(uri: str, text: str, s3=None, content_type: str = "text/plain") -> None:
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    try:
        s3.put_object(
            Bucket=loc.bucket, Key=loc.key, Body=text.encode("utf-8"), ContentType=content_type
        )
    except (ClientError, BotoCoreError) as exc:
        raise _explain(exc, uri) from None


def upload_dir(local_dir: str | Path, uri: str, s3=None, exclude: tuple[str, ...] = ()) -> int:
    """Upload every file under `local_dir` (but top-level `exclude` folders) to the prefix.

    Returns the number of files uploaded.
    """
    local_dir = Path(local_dir)
    base = parse_s3_uri(uri)
    s3 = s3 or client()
    count = 0
    for path in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(local_dir)
        if rel.parts[0] in exclude:
            continue
        upload_file(path, str(base.join(rel.as_posix())), s3=s3)
        count += 1
    return count


def download_dir(uri: str, local_dir: str | Path, s3=None) -> int:
    """Download every object under the prefix, refusing keys that would escape `local_dir`."""
    base = parse_s3_uri(uri)
    local_dir = Path(local_dir).resolve()
    s3 = s3 or client()
    prefix = base.key + "/" if base.key else ""
    count = 0
    for key, _size in list_keys(uri, s3=s3):
        rel = key[len(prefix) :] if key.startswith(prefix) else key
        if not rel or rel.endswith("/"):
            continue
        target = (local_dir / PurePosixPath(rel)).resolve()
        if not target.is_relative_to(local_dir):
            raise StorageError(f"refusing S3 key that escapes the target folder: {key!r}")
        download_file(f"s3://{base.bucket}/{key}", target, s3=s3)
        count += 1
    if count == 0:
        raise StorageError(f"nothing found under {uri}")
    return count


def delete_prefix(uri: str, s3=None) -> int:
    """Delete every object under a prefix; returns how many."""
    loc = parse_s3_uri(uri)
    s3 = s3 or client()
    keys = [key for key, _size in list_keys(uri, s3=s3)]
    for start in range(0, len(keys), 1000):
        batch = [{"Key": k} for k in keys[start : start + 1000]]
        try:
            s3.delete_objects(Bucket=loc.bucket, Delete={"Objects": batch, "Quiet": True})
        except (ClientError, BotoCoreError) as exc:
            raise _explain(exc, uri) from None
    return len(keys)
