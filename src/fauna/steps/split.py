"""Split a preprocessed dataset into train / val / test, stratified per class.

Per class: `test_fraction` of the images go to test (the paper's 15%), then
`val_fraction` of what is left is carved out as validation for early stopping.
Exact duplicates (same sha256, within or across classes) form one group and the
groups, not the images, are assigned, so a duplicate can never sit in train
and in test at once. Each class has its own seeded random stream: the same
input and seed give byte-identical output, and adding a class leaves the
other classes' splits as they were.

Tiny classes: a class with at least two groups always keeps one in train and
gets at least one in test; validation gets at least one where three or more
groups remain, so train keeps two. A class with a single group (one image, or
only copies of one image) stays in train, and split.json notes it.

The records are copied into new shards per split in a seeded random order (an
external shuffle, one shard in memory at a time), because the preprocess output
is ordered by class and a train-time shuffle buffer cannot mix a large
class-sorted stream.

Memory is flat in the image count: the manifest's (id, label, sha256) go into a scratch
SQLite table (`fauna.data.scratch`), which groups duplicates, counts and answers each
record's id -> split; Python holds one group size per duplicate group of the class being
assigned (8 bytes each) and one manifest row at a time.
"""

from __future__ import annotations

import logging
import math
import random
import sqlite3
import tempfile
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fauna.config import Config, SplitConfig
from fauna.contracts import PreprocessInfo, SplitInfo
from fauna.data.dataset import (
    CLASSES,
    MANIFEST,
    PREPROCESS_INFO,
    PREPROCESS_STEP,
    SHARDS_DIR,
    SOURCE,
    SPLIT_STEP,
    SPLITS,
    DatasetError,
    carry_files,
    check_distinct,
    read_classes,
    read_manifest,
    write_manifest,
)
from fauna.data.records import ShuffledShardWriter, iter_records, shard_paths
from fauna.data.scratch import blob, connect, text
from fauna.logs import progress
from fauna.step_output import require_output, step_output

log = logging.getLogger(__name__)

STEP = SPLIT_STEP
SPLIT_FIELDS = ["id", "label", "label_index", "sha256", "split"]
# Scratch tables: one row per manifest row (n: its line order), one per duplicate group.
_SCHEMA = """
CREATE TABLE rows (n INTEGER PRIMARY KEY, id BLOB, label BLOB, sha256 BLOB, split INTEGER,
    seen INTEGER DEFAULT 0);
CREATE TABLE groups (g INTEGER PRIMARY KEY, sha256 BLOB UNIQUE, split INTEGER);
"""
CARRIED_FILES = (CLASSES, SOURCE, PREPROCESS_INFO)


@dataclass
class SplitResult:
    out: Path
    total: int
    counts: dict[str, int]
    per_class: dict[str, dict[str, int]]
    notes: list[str] = field(default_factory=list)

    @property
    def reconciles(self) -> bool:
        return self.total == sum(self.counts[s] for s in SPLITS)

    def summary(self) -> str:
        parts = " + ".join(f"{self.counts[s]} {s}" for s in SPLITS)
        shown = f"{self.total} in = {parts} -> {self.out}"
        return shown + ("" if self.reconciles else "  ** MISMATCH **")


def _rounded(x: float) -> int:
    return math.floor(x + 0.5)


def _take(
    groups: Sequence[int], sizes: Sequence[int], target: int, at_least_one: bool
) -> tuple[list[int], list[int]]:
    """Greedily take whole groups (indices into `sizes`), in order, up to `target` images."""
    taken, rest, n = [], [], 0
    for group in groups:
        if n + sizes[group] <= target:
            taken.append(group)
            n += sizes[group]
        else:
            rest.append(group)
    if at_least_one and not taken and len(rest) >= 2:
        smallest = min(rest, key=lambda g: sizes[g])
        rest.remove(smallest)
        taken.append(smallest)
    return taken, rest


def _strata(db: sqlite3.Connection, classes: list[str]) -> tuple[dict[str, array], array]:
    """Duplicate groups (same sha256) by sha256: each belongs to its most frequent label
    (ties: the first class). label -> its groups' numbers, in sha256 order; group sizes."""
    order = {name: i for i, name in enumerate(classes)}
    strata: dict[str, array] = {}
    sizes = array("q")

    def close(sha: bytes, votes: dict[str, int]) -> None:
        label = min(votes, key=lambda name: (-votes[name], order[name]))
        db.execute("INSERT INTO groups (g, sha256) VALUES (?, ?)", (len(sizes), sha))
        strata.setdefault(label, array("q")).append(len(sizes))
        sizes.append(sum(votes.values()))

    sql = "SELECT sha256, label, COUNT(*) FROM rows GROUP BY sha256, label ORDER BY sha256"
    current, votes = None, {}
    for sha, label, n in _rows(db, sql):
        if sha != current and votes:
            close(current, votes)
            votes = {}
        current, votes[text(label)] = sha, n
    if votes:
        close(current, votes)
    return strata, sizes


def _rows(db: sqlite3.Connection, sql: str) -> Iterator[tuple]:
    """The rows of a query, read ahead in batches (the caller writes while it iterates)."""
    cursor = db.execute(sql)
    while batch := cursor.fetchmany(1024):
        yield from batch


def assign_splits(
    db: sqlite3.Connection, classes: list[str], cfg: SplitConfig
) -> tuple[dict[str, int], list[str]]:
    """The split of every manifest row in `db` (rows.split, an index into SPLITS); the
    images per split and notes on classes handled specially."""
    strata, sizes = _strata(db, classes)
    split_of = array("b", bytes(len(sizes)))
    notes: list[str] = []
    for label in classes:
        class_groups = strata.pop(label, None)
        if not class_groups:
            continue
        random.Random(f"{cfg.seed}:{label}").shuffle(class_groups)
        n = sum(sizes[g] for g in class_groups)
        if len(class_groups) < 2:
            notes.append(f"class {label!r} has {n} image(s), all identical or one: train only")
        test_target = min(_rounded(n * cfg.test_fraction), n - 1)
        test, pool = _take(class_groups, sizes, test_target, at_least_one=True)
        pool_n = sum(sizes[g] for g in pool)
        val_target = min(_rounded(pool_n * cfg.val_fraction), pool_n - 1)
        at_least_one = cfg.val_fraction > 0 and len(pool) >= 3
        val, train = _take(pool, sizes, val_target, at_least_one=at_least_one)
        for name, chosen in (("test", test), ("val", val), ("train", train)):
            for group in chosen:
                split_of[group] = SPLITS.index(name)
    db.executemany(
        "UPDATE groups SET split = ? WHERE g = ?", ((s, g) for g, s in enumerate(split_of))
    )
    db.execute(
        "UPDATE rows SET split = (SELECT split FROM groups WHERE groups.sha256 = rows.sha256)"
    )
    db.execute("CREATE UNIQUE INDEX rows_id ON rows (id)")
    counts = dict(db.execute("SELECT split, COUNT(*) FROM rows GROUP BY split").fetchall())
    return {name: counts.get(i, 0) for i, name in enumerate(SPLITS)}, notes


def split_dataset(pre: Path, out: Path, cfg: SplitConfig) -> SplitResult:
    """Split the preprocess output `pre` into `out` (see the module docstring).

    `out` appears complete (with its completion marker) or not at all.
    """
    pre, out = Path(pre), Path(out)
    require_output(pre, PREPROCESS_STEP)
    check_distinct(pre, out)
    with tempfile.TemporaryDirectory(prefix="fauna-split-") as scratch:
        db = connect(Path(scratch) / "rows.sqlite", _SCHEMA)
        try:
            return _split(pre, out, cfg, db)
        finally:
            db.close()


def _split(pre: Path, out: Path, cfg: SplitConfig, db: sqlite3.Connection) -> SplitResult:
    classes, total, per_shard = _read_input(pre, db)
    expected, notes = assign_splits(db, classes, cfg)
    for note in notes:
        log.warning(note)
    with step_output(out, STEP) as tmp:
        counts, shards = _write_shards(pre, tmp, db, total, expected, per_shard, cfg)
        result = SplitResult(out, total, counts, _per_class(db, classes), notes)
        write_manifest(tmp / MANIFEST, _out_rows(pre, db), SPLIT_FIELDS)
        _split_info(cfg, db, result, shards, per_shard).write(tmp)
        carry_files(pre, tmp, CARRIED_FILES)
    log.info("%s", result.summary())
    return result


def _out_rows(pre: Path, db: sqlite3.Connection) -> Iterator[dict[str, str]]:
    """The input manifest's rows, streamed again, each with its split."""
    splits = _rows(db, "SELECT split FROM rows ORDER BY n")
    for row, (split,) in zip(read_manifest(pre / MANIFEST), splits, strict=True):
        yield {**row, "split": SPLITS[split]}


def _read_input(pre: Path, db: sqlite3.Connection) -> tuple[list[str], int, int]:
    """The classes, the image count and the images per shard of a preprocess output, its
    manifest's rows into `db`; refused if inconsistent."""
    classes = read_classes(pre)
    per_shard_seen: Counter[str | None] = Counter()
    sql = "INSERT INTO rows (id, label, sha256) VALUES (?, ?, ?)"
    total = 0
    for row in read_manifest(pre / MANIFEST):
        db.execute(sql, (blob(row["id"]), blob(row["label"]), blob(row["sha256"])))
        per_shard_seen[row.get("shard")] += 1
        total += 1
    if not total:
        raise DatasetError(f"no images in {pre / MANIFEST}: nothing to split")
    sql = "SELECT id, MIN(n) AS first FROM rows GROUP BY id HAVING COUNT(*) > 1 ORDER BY first"
    repeated = db.execute(sql).fetchall()
    if repeated:
        example = text(repeated[0][0])
        raise DatasetError(f"{len(repeated)} id(s) repeat in the manifest, e.g. {example}")
    labels = sorted(text(label) for (label,) in db.execute("SELECT DISTINCT label FROM rows"))
    unknown = sorted(set(labels) - set(classes))
    if unknown:
        raise DatasetError(f"labels missing from classes.json: {', '.join(unknown)}")
    if len(labels) < 2:
        raise DatasetError(
            f"{pre} has images of one class only ({labels[0]}): a classifier needs at least "
            "two classes (check the source's layout: one folder per class, or a label CSV)"
        )
    if not shard_paths(pre / SHARDS_DIR):
        raise DatasetError(f"no shards in {pre / SHARDS_DIR}: is this a preprocess output?")
    info = PreprocessInfo.read_first(pre)
    # Keep the preprocess step's shard size (from its info, else from its manifest).
    per_shard = int((info and info.images_per_shard) or max(per_shard_seen.values()))
    return classes, total, per_shard


def _write_shards(
    pre: Path,
    out: Path,
    db: sqlite3.Connection,
    total: int,
    expected: dict[str, int],
    per_shard: int,
    cfg: SplitConfig,
) -> tuple[dict[str, int], dict[str, int]]:
    """Every record into its split's shards, shuffled: (counts, shards) per split."""
    writers = {
        name: ShuffledShardWriter(out / name, expected[name], per_shard, f"{cfg.seed}:{name}")
        for name in SPLITS
    }
    seen = 0
    lookup = "UPDATE rows SET seen = seen + 1 WHERE id = ? RETURNING split, seen"
    records = iter_records(pre / SHARDS_DIR)
    for rec in progress(records, total=total, desc="records", unit="img", log=log):
        found = next(iter(db.execute(lookup, (blob(rec.id),)).fetchall()), None)
        if found is None:
            raise DatasetError(f"record {rec.id!r} in the shards is not in the manifest")
        if found[1] > 1:
            raise DatasetError(f"record {rec.id!r} appears twice in the shards")
        seen += 1
        writers[SPLITS[found[0]]].write(rec)
    shards = {name: writer.close() for name, writer in writers.items()}
    missing = total - seen
    if missing:
        raise DatasetError(f"{missing} manifest row(s) have no record in the shards")
    counts = {name: writers[name].count for name in SPLITS}
    # Counts reconcile: every input image is in exactly one split.
    assert sum(counts.values()) == total == sum(expected.values()), (counts, total)
    return counts, shards


def _per_class(db: sqlite3.Connection, classes: list[str]) -> dict[str, dict[str, int]]:
    per_class = {label: {name: 0 for name in SPLITS} for label in classes}
    sql = "SELECT label, split, COUNT(*) FROM rows GROUP BY label, split"
    for label, split, n in db.execute(sql):
        per_class[text(label)][SPLITS[split]] += n
    for c in per_class.values():
        c["total"] = sum(c[s] for s in SPLITS)
    return per_class


def _split_info(
    cfg: SplitConfig,
    db: sqlite3.Connection,
    result: SplitResult,
    shards: dict[str, int],
    per_shard: int,
) -> SplitInfo:
    """split.json: settings, totals (they reconcile), per-class counts, duplicate groups."""
    counts, total = result.counts, result.total
    sql = (
        "SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(SUM(labels > 1), 0) FROM"
        " (SELECT COUNT(*) AS size, COUNT(DISTINCT label) AS labels FROM rows GROUP BY sha256"
        " HAVING size > 1)"
    )
    groups, images_in_groups, cross_class = db.execute(sql).fetchone()
    return SplitInfo.from_json(
        {
            "seed": cfg.seed,
            "test_fraction": cfg.test_fraction,
            "val_fraction": cfg.val_fraction,
            "totals": {"in": total, **counts, "reconciles": result.reconciles},
            "fractions": {name: round(counts[name] / total, 4) for name in SPLITS},
            "per_class": result.per_class,
            "duplicates": {
                "groups": groups,
                "images_in_groups": images_in_groups,
                "cross_class_groups": cross_class,
            },
            "shards": shards,
            "images_per_shard": per_shard,
            "notes": result.notes,
        }
    )


def add_arguments(parser: Any) -> None:
    parser.add_argument("--data", required=True, help="a preprocess output folder")
    parser.add_argument("--out", required=True, help="directory to write the splits into")


def run(args: Any, cfg: Config) -> int:
    split_dataset(Path(args.data), Path(args.out), cfg.split)  # logs its notes and summary
    return 0
