"""ingest's per-file records on disk, so its memory does not grow with the file count.

One row per candidate file (the layout's item, path, name inside its class, label), then
what checking it found (sha256, size, format, or why it was refused). Duplicate detection
and every ordering ingest needs are sorts done by SQLite over a scratch file (see
`fauna.data.scratch`: its ORDER BY sorts as `sorted()` does, `id` breaking ties as a
stable sort), not Python dicts and lists. The table lives in the step's temporary output
and is deleted before the output is published.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from fauna.data.scratch import blob as _b
from fauna.data.scratch import connect
from fauna.data.scratch import text as _s

BATCH = 1024

_SCHEMA = """
CREATE TABLE files (id INTEGER PRIMARY KEY, item BLOB, path BLOB, rel BLOB, label BLOB,
    ok INTEGER, sha256 TEXT, width INTEGER, height INTEGER, format TEXT, reason TEXT,
    detail TEXT);
CREATE TABLE named (path BLOB PRIMARY KEY) WITHOUT ROWID;
CREATE TABLE kept (id INTEGER PRIMARY KEY);
CREATE TABLE grouped (first_item BLOB, first_id INTEGER, item BLOB, id INTEGER, reason TEXT,
    detail TEXT);
CREATE TABLE written (path BLOB, label BLOB, sha256 TEXT);
"""


class FileTable:
    """The candidates of one ingest and what was learnt about each (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._db = connect(self.path, _SCHEMA)
        self._pending: list[tuple[bytes, bytes, bytes, bytes]] = []
        self._count = 0

    def close(self) -> None:
        """Close and delete the file."""
        self._db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> FileTable:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the layout's candidates ---------------------------------------------------------------

    def add(self, item: str, path: str, rel: str, label: str) -> None:
        """One candidate file; ids follow the order of the calls."""
        self._pending.append((_b(item), _b(path), _b(rel), _b(label)))
        self._count += 1
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            sql = "INSERT INTO files (item, path, rel, label) VALUES (?, ?, ?, ?)"
            self._db.executemany(sql, self._pending)
            self._pending = []

    def __len__(self) -> int:
        return self._count

    def name(self, path: str) -> None:
        """Remember that a label CSV named `path` (whether or not it became a candidate)."""
        self._db.execute("INSERT OR IGNORE INTO named VALUES (?)", (_b(path),))

    def is_named(self, path: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM named WHERE path = ?", (_b(path),)).fetchone()
            is not None
        )

    def paths(self, batch: int = BATCH) -> Iterator[list[tuple[int, str]]]:
        """(id, path) of every candidate, `batch` at a time, in id order."""
        self._flush()
        last = 0
        while True:
            sql = "SELECT id, path FROM files WHERE id > ? ORDER BY id LIMIT ?"
            rows = self._db.execute(sql, (last, batch)).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            yield [(i, _s(p)) for i, p in rows]

    # -- what checking found -------------------------------------------------------------------

    def record(self, checks: Iterable[tuple[int, bool, str, int, int, str, str, str]]) -> None:
        """(id, ok, sha256, width, height, format, reason, detail) per checked candidate."""
        sql = (
            "UPDATE files SET ok = ?, sha256 = ?, width = ?, height = ?, format = ?, reason = ?,"
            " detail = ? WHERE id = ?"
        )
        self._db.executemany(sql, ((*rest, i) for i, *rest in checks))

    def refused(self) -> Iterator[tuple[str, str, str]]:
        """(item, reason, detail) of the files that failed their check, by item."""
        sql = "SELECT item, reason, detail FROM files WHERE ok = 0 ORDER BY item, id"
        for item, reason, detail in self._db.execute(sql):
            yield _s(item), reason, detail

    def by_content(self) -> Iterator[list[tuple[int, str, str]]]:
        """Groups of good files with the same sha256: [(id, item, label)] by item, one group
        at a time (a sort over the table: nothing per file is held)."""
        sql = "SELECT sha256, id, item, label FROM files WHERE ok = 1 ORDER BY sha256, item, id"
        group: list[tuple[int, str, str]] = []
        current = None
        for sha, i, item, label in self._db.execute(sql):
            if sha != current and group:
                yield group
                group = []
            current = sha
            group.append((i, _s(item), _s(label)))
        if group:
            yield group

    def keep(self, ids: Iterable[int]) -> None:
        self._db.executemany("INSERT INTO kept VALUES (?)", ((i,) for i in ids))

    def unkeep(self, labels: Iterable[str]) -> None:
        """Drop the kept files of these labels (classes too small to keep)."""
        sql = "DELETE FROM kept WHERE id IN (SELECT id FROM files WHERE label = ?)"
        self._db.executemany(sql, ((_b(label),) for label in labels))

    def reject_grouped(
        self, first: tuple[int, str], rejects: list[tuple[int, str, str, str]]
    ) -> None:
        """Rejects of one duplicate group [(id, item, reason, detail)], reported in the order
        of the group's first file (`first`: its id and item), as a dict in item order did."""
        first_id, first_item = first
        sql = "INSERT INTO grouped VALUES (?, ?, ?, ?, ?, ?)"
        rows = [(_b(first_item), first_id, _b(item), i, r, d) for i, item, r, d in rejects]
        self._db.executemany(sql, rows)

    def grouped_rejects(self) -> Iterator[tuple[str, str, str]]:
        sql = "SELECT item, reason, detail FROM grouped ORDER BY first_item, first_id, item, id"
        for item, reason, detail in self._db.execute(sql):
            yield _s(item), reason, detail

    def kept_sizes(self) -> dict[str, int]:
        """label -> number of kept files."""
        sql = "SELECT label, COUNT(*) FROM files JOIN kept USING (id) GROUP BY label"
        return {_s(label): n for label, n in self._db.execute(sql)}

    def kept(self, order: str) -> Iterator[tuple[str, str, str, str, str, int, int, str]]:
        """(item, path, rel, label, sha256, width, height, format) of the kept files, by
        item (`order="item"`) or by label then name in the class (`order="label"`)."""
        by = {"item": "item, id", "label": "label, rel, item, id"}[order]
        sql = (
            "SELECT item, path, rel, label, sha256, width, height, format FROM files"
            f" JOIN kept USING (id) ORDER BY {by}"
        )
        # Read ahead in batches: the caller writes into this table while it iterates.
        cursor = self._db.execute(sql)
        while rows := cursor.fetchmany(BATCH):
            for item, path, rel, label, sha, width, height, fmt in rows:
                yield _s(item), _s(path), _s(rel), _s(label), sha, width, height, fmt

    # -- what was written ----------------------------------------------------------------------

    def wrote(self, path: str, label: str, sha256: str) -> None:
        self._db.execute("INSERT INTO written VALUES (?, ?, ?)", (_b(path), _b(label), sha256))

    def written(self, order: str) -> Iterator[tuple[str, str, str]]:
        """(path, label, sha256) of the written images, by path or by (label, sha256)."""
        by = {"path": "path", "label": "label, sha256"}[order]
        for path, label, sha in self._db.execute(f"SELECT * FROM written ORDER BY {by}"):
            yield _s(path), _s(label), sha
