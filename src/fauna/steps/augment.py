"""Balance and/or augment the train split: the paper's two strategies.

Modes (`augment.mode`):

    none        train as it is, no train-time augmentation
    augment     train as it is on disk; training applies random flip / rotation /
                zoom / translation / contrast on the fly (`fauna.data.input_pipeline.augmenter`)
    oversample  augmented copies of minority-class train images are added until
                every class reaches the largest class (or `target_count`); classes
                already above the target keep all their images; train-time
                augmentation stays on as well

Validation and test are never augmented: their shards are hardlinked (or
copied) unchanged. augment.json tells the train step what to do at train time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import logging
import os
import random
import shutil
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fauna.config import AUGMENT_MODES, AugmentConfig, Config, PreprocessConfig, check_augment
from fauna.contracts import AugmentInfo, PreprocessInfo, SplitInfo
from fauna.data.dataset import (
    AUGMENT_STEP,
    CLASSES,
    MANIFEST,
    PREPROCESS_INFO,
    SOURCE,
    SPLIT_INFO,
    SPLIT_STEP,
    SPLITS,
    DatasetError,
    carry_files,
    check_distinct,
    read_classes,
    read_manifest,
    write_manifest,
)
from fauna.data.records import Record, ShuffledShardWriter, iter_records, shard_paths
from fauna.logs import progress
from fauna.step_output import require_output, step_output

log = logging.getLogger(__name__)

STEP = AUGMENT_STEP
BALANCED_FIELDS = ["id", "label", "label_index", "sha256", "split", "augmented_from"]
CARRIED_FILES = (CLASSES, SOURCE, PREPROCESS_INFO, SPLIT_INFO)
BATCH = 64


@dataclass
class AugmentResult:
    out: Path
    mode: str
    before: dict[str, int]  # train images per class
    after: dict[str, int]
    counts: dict[str, int]  # images per split, after
    copies_added: int

    def summary(self) -> str:
        parts = ", ".join(f"{self.counts[s]} {s}" for s in SPLITS)
        return (
            f"{self.mode}: train {sum(self.before.values())} -> {sum(self.after.values())} "
            f"(+{self.copies_added} augmented copies); {parts} -> {self.out}"
        )


def link_or_copy(src: Path, dst: Path) -> None:
    """Hardlink when on the same file system (free), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def copies_per_image(
    train_rows: list[dict[str, str]], classes: list[str], target: int, seed: int
) -> dict[str, int]:
    """How many augmented copies each train image gets: spread evenly, the rest at random."""
    by_class: dict[str, list[str]] = defaultdict(list)
    for row in train_rows:
        by_class[row["label"]].append(row["id"])
    plan: dict[str, int] = {}
    for label in classes:
        ids = by_class.get(label, [])
        needed = target - len(ids)
        if not ids or needed <= 0:
            continue
        base, extra = divmod(needed, len(ids))
        lucky = set(random.Random(f"{seed}:{label}").sample(ids, extra))
        for image_id in ids:
            if base or image_id in lucky:
                plan[image_id] = base + (image_id in lucky)
    return plan


class CopyMaker:
    """Augments decoded images in batches and re-encodes them as JPEG, deterministically."""

    def __init__(self, cfg: AugmentConfig, quality: int) -> None:
        from fauna.data.input_pipeline import (
            augmenter,  # TensorFlow/Keras only when copies are made
        )

        self.layers = augmenter(cfg)
        self.quality = quality
        self.pending: list[tuple[Record, int]] = []

    def add(self, rec: Record, k: int) -> list[tuple[Record, str]]:
        self.pending.append((rec, k))
        return self.flush() if len(self.pending) >= BATCH else []

    def flush(self) -> list[tuple[Record, str]]:
        """The copies made so far, each with the id of its source image."""
        batch, self.pending = self.pending, []
        pixels = [np.asarray(Image.open(io.BytesIO(r.encoded)).convert("RGB")) for r, _ in batch]
        by_shape: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, array in enumerate(pixels):
            by_shape[array.shape].append(i)
        made: dict[int, tuple[Record, str]] = {}
        for indices in by_shape.values():
            x = np.stack([pixels[i] for i in indices]).astype("float32")
            y = np.asarray(self.layers(x, training=True))
            y = np.clip(np.rint(y), 0, 255).astype("uint8")
            for i, image in zip(indices, y, strict=True):
                rec, k = batch[i]
                buf = io.BytesIO()
                Image.fromarray(image).save(buf, "JPEG", quality=self.quality)
                encoded = buf.getvalue()
                copy = Record(
                    encoded=encoded,
                    label_index=rec.label_index,
                    label=rec.label,
                    sha256=hashlib.sha256(encoded).hexdigest(),
                    id=f"{rec.id}#aug{k}",
                )
                made[i] = (copy, rec.id)
        return [made[i] for i in sorted(made)]


def _oversample(
    split_dir: Path,
    out: Path,
    cfg: AugmentConfig,
    plan: dict[str, int],
    train_count: int,
    per_shard: int,
    quality: int,
) -> list[dict[str, Any]]:
    """Rewrite train as originals + copies, shuffled; returns the copies' manifest rows."""
    added = sum(plan.values())
    writer = ShuffledShardWriter(out / "train", train_count + added, per_shard, f"{cfg.seed}:aug")
    maker = CopyMaker(cfg, quality)
    rows: list[dict[str, Any]] = []
    originals = 0

    def keep(made: list[tuple[Record, str]], bar: Any) -> None:
        for copy, source_id in made:
            writer.write(copy)
            rows.append(
                {
                    "id": copy.id,
                    "label": copy.label,
                    "label_index": copy.label_index,
                    "sha256": copy.sha256,
                    "split": "train",
                    "augmented_from": source_id,
                }
            )
        bar.update(len(made))

    with progress(total=train_count + added, desc="oversample", unit="img", log=log) as bar:
        for rec in iter_records(split_dir / "train"):
            writer.write(rec)
            originals += 1
            bar.update()
            for k in range(1, plan.get(rec.id, 0) + 1):
                keep(maker.add(rec, k), bar)
        keep(maker.flush(), bar)
    writer.close()
    if originals != train_count or len(rows) != added:
        raise DatasetError(
            f"train shards hold {originals} images and gave {len(rows)} copies; "
            f"the manifest says {train_count} images needing {added} copies"
        )
    return rows


def _shard_settings(split_dir: Path) -> tuple[int, int]:
    """The JPEG quality and images per shard the copies are written with: the preprocess
    step's (carried in preprocess.json), else the split's shard size, else the defaults."""
    pre, split = PreprocessInfo.read_first(split_dir), SplitInfo.read_first(split_dir)
    quality = (pre and pre.jpeg_quality) or PreprocessConfig().jpeg_quality
    per_shard = (
        (pre and pre.images_per_shard)
        or (split and split.images_per_shard)
        or PreprocessConfig().images_per_shard
    )
    return int(quality), int(per_shard)


def augment_dataset(split_dir: Path, out: Path, cfg: AugmentConfig) -> AugmentResult:
    """Write `out`: the split layout with train balanced/augmented per `cfg.mode`.

    `out` appears complete (with its completion marker) or not at all.
    """
    split_dir, out = Path(split_dir), Path(out)
    check_augment(cfg)
    require_output(split_dir, SPLIT_STEP)
    check_distinct(split_dir, out)
    classes = read_classes(split_dir)
    rows = _read_rows(split_dir)
    train_rows = [r for r in rows if r["split"] == "train"]
    # Copies are written like the preprocess step wrote the originals.
    quality, per_shard = _shard_settings(split_dir)
    before = Counter(r["label"] for r in train_rows)
    with step_output(out, STEP) as tmp:
        linked = ("val", "test") if cfg.mode == "oversample" else SPLITS
        for name in linked:
            (tmp / name).mkdir()
            for shard in shard_paths(split_dir / name):
                link_or_copy(shard, tmp / name / shard.name)
        target, copies = 0, []
        if cfg.mode == "oversample":
            target = cfg.target_count if cfg.target_count > 0 else max(before.values())
            plan = copies_per_image(train_rows, classes, target, cfg.seed)
            copies = _oversample(split_dir, tmp, cfg, plan, len(train_rows), per_shard, quality)
        # Streamed, not a copy of every row: memory stays one manifest's worth (+ copies).
        out_rows = itertools.chain(({**r, "augmented_from": ""} for r in rows), copies)
        write_manifest(tmp / MANIFEST, out_rows, BALANCED_FIELDS)
        counts = Counter(r["split"] for r in itertools.chain(rows, copies))
        added = Counter(c["label"] for c in copies)
        result = AugmentResult(
            out,
            cfg.mode,
            {c: before[c] for c in classes},
            {c: before[c] + added[c] for c in classes},
            {name: counts.get(name, 0) for name in SPLITS},
            len(copies),
        )
        # Counts reconcile: train grew by exactly the copies, val and test did not change.
        assert result.counts["train"] == len(train_rows) + len(copies), result.counts
        _augment_info(cfg, result, target).write(tmp)
        carry_files(split_dir, tmp, CARRIED_FILES)
    log.info("%s", result.summary())
    return result


def _read_rows(split_dir: Path) -> list[dict[str, str]]:
    rows = list(read_manifest(split_dir / MANIFEST))
    if rows and "split" not in rows[0]:
        raise DatasetError(f"{split_dir / MANIFEST} has no split column: run `fauna split` first")
    if any(r.get("augmented_from") for r in rows):
        raise DatasetError(f"{split_dir} already holds augmented copies: use the split output")
    if not any(r["split"] == "train" for r in rows):
        raise DatasetError(f"no train images in {split_dir / MANIFEST}")
    return rows


def _augment_info(cfg: AugmentConfig, result: AugmentResult, target: int) -> AugmentInfo:
    """augment.json: the AugmentConfig fields flat at the top (the train step rebuilds it)."""
    before, after = result.before, result.after
    empty = [c for c, n in before.items() if n == 0]
    oversample = cfg.mode == "oversample"
    return AugmentInfo.from_json(
        {
            **dataclasses.asdict(cfg),
            "train_time_augmentation": cfg.mode != "none",
            "oversample_target": target if oversample else None,
            "per_class": {
                c: {"before": before[c], "after": after[c], "added": after[c] - before[c]}
                for c in before
            },
            "copies_added": result.copies_added,
            "totals": {
                "train_before": sum(before.values()),
                "train_after": result.counts["train"],
                "val": result.counts["val"],
                "test": result.counts["test"],
            },
            "validation_and_test": "unchanged (never augmented)",
            "notes": [f"no train images to oversample for: {', '.join(empty)}"]
            if oversample and empty
            else [],
        }
    )


def add_arguments(parser: Any) -> None:
    parser.add_argument("--data", required=True, help="a split output folder")
    parser.add_argument("--out", required=True, help="directory to write the result into")
    parser.add_argument("--mode", choices=AUGMENT_MODES, default=None, help="sets augment.mode")


def run(args: Any, cfg: Config) -> int:
    aug = cfg.augment if args.mode is None else dataclasses.replace(cfg.augment, mode=args.mode)
    augment_dataset(Path(args.data), Path(args.out), aug)  # logs its one summary line
    return 0
