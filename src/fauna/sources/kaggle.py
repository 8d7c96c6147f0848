"""kaggle:owner/dataset — kagglehub downloads and unpacks; the limits apply to what it unpacked."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from fauna.sources.base import Fetched, Limits, Source, SourceError, slug

log = logging.getLogger(__name__)

PREFIX = "kaggle:"
SECRETS = ("KAGGLE_USERNAME", "KAGGLE_KEY")
_HANDLE = re.compile(r"^[\w.-]+/[\w.-]+(/versions/\d+)?$")


def credentials_found() -> bool:
    """Whether kagglehub finds credentials (env or kaggle.json); a broken file is an error."""
    from kagglehub.config import get_kaggle_credentials

    try:
        return bool(get_kaggle_credentials())
    except ValueError as exc:  # a broken kaggle.json
        raise SourceError(f"Kaggle credentials unusable: {exc}") from None


def check_credentials() -> None:
    """Fail in one line, before any network call, when no Kaggle credentials are set."""
    if not credentials_found():
        raise SourceError(
            "Kaggle credentials missing: set KAGGLE_USERNAME and KAGGLE_KEY (or KAGGLE_API_TOKEN, "
            "or write ~/.kaggle/kaggle.json), or ingest a folder, archive, s3:// or http(s) URL"
        )


def download(source: str, target: Path) -> Path:
    """kagglehub downloads and unpacks; the size limits apply to what it unpacked."""
    handle = source[len(PREFIX) :].strip("/")
    if not _HANDLE.match(handle):
        raise SourceError(f"bad Kaggle handle {source!r}: expected kaggle:owner/dataset")
    check_credentials()
    import kagglehub
    import requests

    log.info("downloading Kaggle dataset %s", handle)
    try:
        # kagglehub unpacks the dataset's archive itself.
        return Path(kagglehub.dataset_download(handle, output_dir=str(target)))
    except (requests.RequestException, OSError, ValueError, RuntimeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SourceError(f"Kaggle download of {handle} failed: {first}") from None


def _fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    return Fetched(download(source, workdir / "kaggle"), remote=True)


def _name(source: str) -> str:
    parts = source[len(PREFIX) :].strip("/").split("/")
    return slug(parts[1] if len(parts) > 1 else parts[0])


SOURCE = Source(
    "kaggle",
    lambda s: s.startswith(PREFIX),
    _fetch,
    _name,
    f"{PREFIX}owner/name",
    secrets=SECRETS,
    local=False,
)
