"""Scratch SQLite tables: per-image records on disk, so a step's memory stays flat in the
image count.

A step that must relate every image to every other (ingest's duplicate detection, split's
duplicate groups and id -> split lookup) keeps its per-image rows in a throwaway SQLite
file and lets SQLite sort and look them up; the process holds one batch or one row at a
time plus SQLite's bounded page cache (`CACHE_KIB`).

Text goes in as UTF-8 BLOBs encoded with "surrogatepass" (`blob`; a file name that is not
valid UTF-8 reaches Python with lone surrogates): SQLite orders BLOBs bytewise, and the
bytewise order of that encoding is Python's code-point order of the strings, so an
ORDER BY sorts exactly as `sorted()` does; a rowid (insertion order) breaks ties as a
stable sort does.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

# SQLite's page cache (which also bounds its sorter's memory) per connection, in KiB.
CACHE_KIB = 2048


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A new scratch database at `path` with `schema`, inside one open transaction (no
    journal, no fsync: it is thrown away, never recovered)."""
    db = sqlite3.connect(Path(path), isolation_level=None)
    for pragma in ("journal_mode=OFF", "synchronous=OFF", f"cache_size=-{CACHE_KIB}"):
        db.execute(f"PRAGMA {pragma}")
    db.execute("PRAGMA temp_store=FILE")
    db.executescript(schema)
    db.execute("BEGIN")
    return db


def blob(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def text(data: bytes) -> str:
    return data.decode("utf-8", "surrogatepass")
