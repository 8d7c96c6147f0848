"""A local folder: read in place (its files are copied, never moved)."""

from __future__ import annotations

from pathlib import Path

from fauna.sources.base import Fetched, Limits, Source, slug


def _fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    return Fetched(Path(source).expanduser(), remote=False)


def _name(source: str) -> str:
    return slug(Path(source).expanduser().absolute().name)


SOURCE = Source(
    "folder", lambda s: Path(s).expanduser().is_dir(), _fetch, _name, "a folder", local=True
)
