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
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter, defaultdict
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
from fauna.logs import progress
from fauna.step_output import require_output, step_output

log = logging.getLogger(__name__)

STEP = SPLIT_STEP
SPLIT_FIELDS = ["id", "label", "label_index", "sha256", "split"]
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
    groups: list[list[dict[str, str]]], target: int, at_least_one: bool
) -> tuple[list[list[dict[str, str]]], list[list[dict[str, str]]]]:
    """Greedily take whole groups, in order, up to `target` images."""
    taken, rest, n = [], [], 0
    for group in groups:
        if n + len(group) <= target:
            taken.append(group)
            n += len(group)
        else:
            rest.append(group)
    if at_least_one and not taken and len(rest) >= 2:
        smallest = min(rest, key=len)
        rest.remove(smallest)
        taken.append(smallest)
    return taken, rest


def assign_splits(
    rows: list[dict[str, str]], classes: list[str], cfg: SplitConfig
) -> tuple[dict[str, str], list[str]]:
    """id -> split for every manifest row, plus notes on classes handled specially."""
    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        groups[row["sha256"]].append(row)
    order = {name: i for i, name in enumerate(classes)}
    strata: dict[str, list[list[dict[str, str]]]] = defaultdict(list)
    for sha in sorted(groups):
        group = groups[sha]
        votes = Counter(r["label"] for r in group)
        # A duplicate group belongs to its most frequent label (ties: the first class).
        label = min(votes, key=lambda name: (-votes[name], order[name]))
        strata[label].append(group)

    assignment: dict[str, str] = {}
    notes: list[str] = []
    for label in classes:
        class_groups = strata.get(label, [])
        if not class_groups:
            continue
        random.Random(f"{cfg.seed}:{label}").shuffle(class_groups)
        n = sum(len(g) for g in class_groups)
        if len(class_groups) < 2:
            notes.append(f"class {label!r} has {n} image(s), all identical or one: train only")
        test_target = min(_rounded(n * cfg.test_fraction), n - 1)
        test, pool = _take(class_groups, test_target, at_least_one=True)
        pool_n = sum(len(g) for g in pool)
        val_target = min(_rounded(pool_n * cfg.val_fraction), pool_n - 1)
        val, train = _take(pool, val_target, at_least_one=cfg.val_fraction > 0 and len(pool) >= 3)
        for name, chosen in (("test", test), ("val", val), ("train", train)):
            for group in chosen:
                for row in group:
                    assignment[row["id"]] = name
    return assignment, notes


def split_dataset(pre: Path, out: Path, cfg: SplitConfig) -> SplitResult:
    """Split the preprocess output `pre` into `out` (see the module docstring).

    `out` appears complete (with its completion marker) or not at all.
    """
    pre, out = Path(pre), Path(out)
    require_output(pre, PREPROCESS_STEP)
    check_distinct(pre, out)
    classes, rows = _read_input(pre)
    assignment, notes = assign_splits(rows, classes, cfg)
    for note in notes:
        log.warning(note)
    with step_output(out, STEP) as tmp:
        counts, shards, per_shard = _write_shards(pre, tmp, rows, assignment, cfg)
        result = SplitResult(out, len(rows), counts, _per_class(rows, assignment, classes), notes)
        # Streamed, not a second list of every row: memory stays one manifest's worth.
        out_rows = ({**r, "split": assignment[r["id"]]} for r in rows)
        write_manifest(tmp / MANIFEST, out_rows, SPLIT_FIELDS)
        _split_info(cfg, rows, result, shards, per_shard).write(tmp)
        carry_files(pre, tmp, CARRIED_FILES)
    log.info("%s", result.summary())
    return result


def _read_input(pre: Path) -> tuple[list[str], list[dict[str, str]]]:
    """The classes and manifest rows of a preprocess output, refused if inconsistent."""
    classes = read_classes(pre)
    rows = list(read_manifest(pre / MANIFEST))
    if not rows:
        raise DatasetError(f"no images in {pre / MANIFEST}: nothing to split")
    ids = Counter(r["id"] for r in rows)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise DatasetError(f"{len(repeated)} id(s) repeat in the manifest, e.g. {repeated[0]}")
    labels = sorted({r["label"] for r in rows})
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
    return classes, rows


def _write_shards(
    pre: Path, out: Path, rows: list[dict[str, str]], assignment: dict[str, str], cfg: SplitConfig
) -> tuple[dict[str, int], dict[str, int], int]:
    """Every record into its split's shards, shuffled: (counts, shards, per shard) per split."""
    expected = Counter(assignment.values())
    info = PreprocessInfo.read_first(pre)
    # Keep the preprocess step's shard size (from its info, else from its manifest).
    rows_per_shard = Counter(r.get("shard") for r in rows)
    per_shard = int((info and info.images_per_shard) or max(rows_per_shard.values()))
    writers = {
        name: ShuffledShardWriter(out / name, expected[name], per_shard, f"{cfg.seed}:{name}")
        for name in SPLITS
    }
    seen: set[str] = set()
    records = iter_records(pre / SHARDS_DIR)
    for rec in progress(records, total=len(rows), desc="records", unit="img", log=log):
        name = assignment.get(rec.id)
        if name is None:
            raise DatasetError(f"record {rec.id!r} in the shards is not in the manifest")
        if rec.id in seen:
            raise DatasetError(f"record {rec.id!r} appears twice in the shards")
        seen.add(rec.id)
        writers[name].write(rec)
    shards = {name: writer.close() for name, writer in writers.items()}
    missing = len(rows) - len(seen)
    if missing:
        raise DatasetError(f"{missing} manifest row(s) have no record in the shards")
    counts = {name: writers[name].count for name in SPLITS}
    # Counts reconcile: every input image is in exactly one split.
    assert sum(counts.values()) == len(rows) == len(assignment), (counts, len(rows))
    return counts, shards, per_shard


def _per_class(
    rows: list[dict[str, str]], assignment: dict[str, str], classes: list[str]
) -> dict[str, dict[str, int]]:
    per_class = {label: {name: 0 for name in SPLITS} for label in classes}
    for row in rows:
        per_class[row["label"]][assignment[row["id"]]] += 1
    for c in per_class.values():
        c["total"] = sum(c[s] for s in SPLITS)
    return per_class


def _split_info(
    cfg: SplitConfig,
    rows: list[dict[str, str]],
    result: SplitResult,
    shards: dict[str, int],
    per_shard: int,
) -> SplitInfo:
    """split.json: settings, totals (they reconcile), per-class counts, duplicate groups."""
    counts = result.counts
    group_sizes = Counter(r["sha256"] for r in rows)
    labels_per_sha: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        labels_per_sha[r["sha256"]].add(r["label"])
    return SplitInfo.from_json(
        {
            "seed": cfg.seed,
            "test_fraction": cfg.test_fraction,
            "val_fraction": cfg.val_fraction,
            "totals": {"in": len(rows), **counts, "reconciles": result.reconciles},
            "fractions": {name: round(counts[name] / len(rows), 4) for name in SPLITS},
            "per_class": result.per_class,
            "duplicates": {
                "groups": sum(1 for n in group_sizes.values() if n > 1),
                "images_in_groups": sum(n for n in group_sizes.values() if n > 1),
                "cross_class_groups": sum(1 for s in labels_per_sha.values() if len(s) > 1),
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
