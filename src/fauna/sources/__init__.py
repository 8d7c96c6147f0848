"""Where a dataset comes from: one module per kind of source, registered in one table.

Every source ends up as a local folder, within limits (`Limits`, from `data.max_*`)
enforced while the bytes stream in (see `fauna.sources.archive` and `.url`). Sources are
shown and stored redacted (`redact`): a presigned URL's signature, or a user:password in
a URL, never reaches a log, a report or `source.json`.

Adding a kind of source: a module exposing `SOURCE = Source(...)` (see
`fauna.sources.base.Source`) and its line in `SOURCES`. What follows a fetch (layout,
checks, quarantine, cache, naming) is shared.
"""

from __future__ import annotations

from pathlib import Path

from fauna.sources import archive, folder, kaggle, labels_csv, s3, url
from fauna.sources.base import Fetched, LimitExceeded, Limits, Source, SourceError

# Asked in this order; the first kind whose `detect` says yes owns the source.
SOURCES: tuple[Source, ...] = (
    kaggle.SOURCE,
    s3.SOURCE,
    url.SOURCE,
    labels_csv.SOURCE,
    archive.SOURCE,
    folder.SOURCE,
)

__all__ = [
    "SOURCES",
    "Fetched",
    "LimitExceeded",
    "Limits",
    "Source",
    "SourceError",
    "dataset_name",
    "described",
    "fetch",
    "find",
    "is_local",
    "kaggle_credentials_found",
    "redact",
    "secret_env_keys",
    "source_kind",
]

kaggle_credentials_found = kaggle.credentials_found


def described() -> str:
    """The kinds of source in words, from the table: those a cluster can read, then the
    local ones (the `source` knob's help)."""
    remote = [kind.example for kind in SOURCES if not kind.local]
    local = [kind.example for kind in SOURCES if kind.local]
    listed = ", ".join(local[:-1]) + " or " + local[-1] if len(local) > 1 else "".join(local)
    return ", ".join(remote) + (f"; in local runs also {listed}" if local else "")


def find(source: str) -> Source | None:
    """The kind that owns `source` (None: a local path that does not exist)."""
    return next((kind for kind in SOURCES if kind.detect(source)), None)


def is_local(source: str) -> bool:
    """Whether `source` is a path on this machine (existing or not)."""
    kind = find(source)
    return kind is None or kind.local


def source_kind(source: str) -> str:
    """kaggle | s3 | http | local (folder, archive file or label CSV)."""
    kind = find(source)
    return "local" if kind is None or kind.local else kind.kind


def redact(source: str) -> str:
    """A source as it may be shown and stored (a URL keeps scheme, host and path only)."""
    kind = find(source)
    return kind.redact(source) if kind else source


def dataset_name(source: str) -> str:
    """A display name for the dataset, from its source (when `data.name` is not set).

    The Kaggle dataset's name, a folder's name, an archive's stem, the last part of an
    S3 prefix (or the bucket), a URL's file stem, a label CSV's folder.
    """
    return (find(source) or archive.SOURCE).name(source)


def fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    """Make `source` available as a local folder (downloading into `workdir` if needed)."""
    kind = find(source)
    if kind is None:
        raise SourceError(f"source not found: {source} (no such file or folder)")
    return kind.fetch(source, workdir, limits)


def secret_env_keys() -> tuple[str, ...]:
    """Environment variables the sources read beyond storage's (wired from the Secret)."""
    return tuple(key for kind in SOURCES if kind.kind != "s3" for key in kind.secrets)
