"""s3://bucket/key: an archive object, or a prefix holding a folder tree (or one archive)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path, PurePosixPath

from fauna.sources.archive import is_archive, strip_archive_suffix, unpacked
from fauna.sources.base import Fetched, Limits, Source, SourceError, redact_url, slug

# The storage layer's credentials (wired for every task that touches S3).
SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


def _fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    """An archive object, or a prefix holding a folder tree (or a single archive)."""
    from fauna.store import storage  # boto3: only to fetch (the table loads without it)

    storage.check_bucket(source)
    loc = storage.parse_s3_uri(source)
    if loc.key and is_archive(loc.key) and storage.exists(source):
        archive = storage.download_file(source, workdir / "download" / PurePosixPath(loc.key).name)
        _check_download_size(archive, source, limits)
        return unpacked(archive, workdir / "unpacked", limits, remote=True)
    count = size = 0
    for _key, object_size in storage.list_keys(source):
        count, size = count + 1, size + object_size
        if count > limits.max_files:
            raise limits.exceeded(f"{source} holds more objects", count, "max_files")
    if size > limits.max_dataset_bytes:
        raise limits.exceeded(f"{source} holds {size} bytes", size, "max_dataset_bytes")
    target = workdir / "s3"
    try:
        storage.download_dir(source, target)
    except storage.StorageError as exc:
        if str(exc).startswith("nothing found"):
            raise SourceError(f"nothing found under {source}") from None
        raise
    files = [p for p in target.rglob("*") if p.is_file()]
    if len(files) == 1 and is_archive(files[0]):
        return unpacked(files[0], workdir / "unpacked", limits, remote=True)
    return Fetched(target, remote=True)


def _check_download_size(path: Path, source: str, limits: Limits) -> None:
    size = path.stat().st_size
    if size > limits.max_dataset_bytes:
        path.unlink()
        raise limits.exceeded(f"{source} is {size} bytes", size, "max_dataset_bytes")


def _name(source: str) -> str:
    parts = urllib.parse.urlsplit(source)
    last = PurePosixPath(parts.path.rstrip("/")).name
    if is_archive(last):
        return slug(strip_archive_suffix(last))
    return slug(last or parts.hostname or "")


def _detect(source: str) -> bool:
    from fauna.store.s3client import is_s3_uri

    return is_s3_uri(source)


SOURCE = Source(
    "s3",
    _detect,
    _fetch,
    _name,
    "s3://bucket/prefix",
    redact=redact_url,
    secrets=SECRETS,
)
