"""Test data: a preprocess-style dataset directory built from synthetic images.

Written here rather than by the preprocess step so that tests of later steps do
not depend on it: shards/part-*.tfrecord, manifest.csv, classes.json,
source.json and preprocess.json, exactly in the layout of `fauna.data.dataset`, and
the completion marker a real preprocess run writes last (`fauna.step_output`).
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Sequence
from pathlib import Path

from fauna.data.dataset import (
    CLASSES,
    MANIFEST,
    PREPROCESS_INFO,
    PREPROCESS_STEP,
    write_json,
    write_manifest,
)
from fauna.data.records import Record, ShardWriter
from fauna.data.synthetic import class_image
from fauna.step_output import mark_complete

PREPROCESSED_FIELDS = ["id", "label", "label_index", "sha256", "shard"]


def jpeg_bytes(label_index: int, num_classes: int, size: int, rng: random.Random) -> bytes:
    buf = io.BytesIO()
    class_image(label_index, num_classes, (size, size), rng).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_preprocessed(
    out: str | Path,
    classes: Sequence[str],
    per_class: int | Sequence[int],
    size: int = 32,
    duplicates: Sequence[tuple[str, str]] = (),
    per_shard: int = 16,
    seed: int = 0,
) -> Path:
    """Write `per_class` synthetic size x size JPEGs per class as a preprocess output.

    Image ids are `<label>/<label>_<i:04d>.jpg`. Each `(source_id, label)` in
    `duplicates` adds an exact copy (same bytes, same sha256) of `source_id`
    labelled `label` (the same class or another one), id `<label>/dup<j>_<name>`.
    Records are written class by class, as a real preprocess run would.
    """
    out = Path(out)
    classes = list(classes)
    counts = [per_class] * len(classes) if isinstance(per_class, int) else list(per_class)
    rng = random.Random(seed)
    records: list[Record] = []
    for idx, (label, count) in enumerate(zip(classes, counts, strict=True)):
        for i in range(count):
            encoded = jpeg_bytes(idx, len(classes), size, rng)
            sha = hashlib.sha256(encoded).hexdigest()
            records.append(Record(encoded, idx, label, sha, f"{label}/{label}_{i:04d}.jpg"))
    by_id = {r.id: r for r in records}
    for j, (source_id, label) in enumerate(duplicates):
        src = by_id[source_id]
        name = source_id.rsplit("/", 1)[-1]
        dup_id = f"{label}/dup{j}_{name}"
        records.append(Record(src.encoded, classes.index(label), label, src.sha256, dup_id))
    records.sort(key=lambda r: (r.label_index, r.id))

    rows = []
    with ShardWriter(out / "shards", per_shard) as writer:
        for rec in records:
            shard = writer.write(rec)
            rows.append(
                {
                    "id": rec.id,
                    "label": rec.label,
                    "label_index": rec.label_index,
                    "sha256": rec.sha256,
                    "shard": shard,
                }
            )
    write_manifest(out / MANIFEST, rows, PREPROCESSED_FIELDS)
    write_json(out / CLASSES, classes)
    write_json(
        out / "source.json",
        {"source": "synthetic", "name": "test", "synthetic": True, "version": f"seed{seed}"},
    )
    write_json(
        out / PREPROCESS_INFO,
        {"image_size": size, "mode": "crop", "jpeg_quality": 90, "images_per_shard": per_shard},
    )
    mark_complete(out, PREPROCESS_STEP)
    return out
