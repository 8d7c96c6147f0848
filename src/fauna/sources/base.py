"""What every source shares: the `Source` interface, the limits, and what a fetch returns.

A source kind is one module of this package exposing `SOURCE`, a `Source` (how to
recognise its strings, make one local, name it, redact it, and which secrets it needs),
registered in the table of `fauna.sources`.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fauna.config import DataConfig
from fauna.errors import FaunaError

CHUNK = 1 << 20


class SourceError(FaunaError):
    """The dataset source cannot be read (one clear line, no traceback)."""


class LimitExceeded(SourceError):
    """The source crosses one of the `data.max_*` limits."""


@dataclass(frozen=True)
class Limits:
    """How much a source may bring in (see DataConfig for the meaning of each)."""

    max_file_bytes: int
    max_dataset_bytes: int
    max_files: int
    max_compression_ratio: float
    # http(s): the whole download's deadline, and the slowest rate tolerated (see DataConfig).
    download_timeout_s: float = 6 * 3600
    min_download_bytes_per_s: int = 10_000
    download_rate_window_s: float = 30.0

    @classmethod
    def from_config(cls, cfg: DataConfig) -> Limits:
        return cls(
            cfg.max_file_bytes,
            cfg.max_dataset_bytes,
            cfg.max_files,
            cfg.max_compression_ratio,
            cfg.download_timeout_s,
            cfg.min_download_bytes_per_s,
            cfg.download_rate_window_s,
        )

    def exceeded(self, what: str, found: float, key: str) -> LimitExceeded:
        """One line: what crossed which limit, and the config key that raises it."""
        limit = getattr(self, key)
        return LimitExceeded(
            f"{what}: {number(found)} > data.{key}={number(limit)}; stopped "
            f"(raise data.{key} if the source is what you expect)"
        )


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass
class Fetched:
    """A source made local: `root` holds the data; `refused` lists (member, reason, detail).

    `labels_csv` is the label CSV the source itself names (`--source labels.csv`).
    """

    root: Path
    remote: bool
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    labels_csv: Path | None = None


def keep(source: str) -> str:
    """The redaction of a source that holds no secret: itself."""
    return source


def slug(name: str) -> str:
    """A dataset name safe for a path or an S3 key."""
    return re.sub(r"[^\w.-]+", "-", name).strip("-.") or "dataset"


@dataclass(frozen=True)
class Source:
    """One kind of source, as the table in `fauna.sources` knows it.

    kind: its name; detect: whether a source string is of this kind (the table asks in
    order, first yes wins); fetch: make it a local folder within `Limits`; name: a
    display name from the source string; example: what such a string looks like, in a
    few words (the `source` knob's help lists them: `fauna.sources.described`); redact:
    the string as it may be shown and stored; secrets: environment variables it reads
    (wired from the cluster's Secret); local: whether it is a path on this machine (a
    cluster pod cannot read it).
    """

    kind: str
    detect: Callable[[str], bool]
    fetch: Callable[[str, Path, Limits], Fetched]
    name: Callable[[str], str]
    example: str
    redact: Callable[[str], str] = keep
    secrets: tuple[str, ...] = ()
    local: bool = False


def redact_url(source: str) -> str:
    """A URL as it may be shown and stored: scheme, host and path only.

    A presigned URL's query (signature, key id), a fragment and a user:password are dropped.
    """
    parts = urllib.parse.urlsplit(source)
    host = parts.hostname or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
