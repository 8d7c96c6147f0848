"""TFRecord shards: the streaming training format.

Why TFRecord: tf.data reads it in parallel with no per-file overhead, shards
travel well through S3, and images stay JPEG-encoded (small) until the training
input pipeline decodes them. Memory stays bounded whatever the dataset size.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import tensorflow as tf

SHARD_GLOB = "part-*.tfrecord"

FEATURES = {
    "image/encoded": tf.io.FixedLenFeature([], tf.string),
    "image/class/label": tf.io.FixedLenFeature([], tf.int64),
    "image/class/text": tf.io.FixedLenFeature([], tf.string),
    "image/sha256": tf.io.FixedLenFeature([], tf.string),
    "image/id": tf.io.FixedLenFeature([], tf.string),
}


@dataclass(frozen=True)
class Record:
    encoded: bytes  # JPEG bytes
    label_index: int
    label: str
    sha256: str
    id: str  # relative path of the source image (or id of an augmented copy)


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def serialize(rec: Record) -> bytes:
    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": _bytes(rec.encoded),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[rec.label_index])
                ),
                "image/class/text": _bytes(rec.label.encode()),
                "image/sha256": _bytes(rec.sha256.encode()),
                "image/id": _bytes(rec.id.encode()),
            }
        )
    )
    # deterministic: the same record gives the same bytes in every process (stable map order)
    return example.SerializeToString(deterministic=True)


def deserialize(data: bytes) -> Record:
    f = tf.train.Example.FromString(data).features.feature
    return Record(
        encoded=f["image/encoded"].bytes_list.value[0],
        label_index=int(f["image/class/label"].int64_list.value[0]),
        label=f["image/class/text"].bytes_list.value[0].decode(),
        sha256=f["image/sha256"].bytes_list.value[0].decode(),
        id=f["image/id"].bytes_list.value[0].decode(),
    )


class ShardWriter:
    """Writes records into `directory/part-NNNNN.tfrecord`, `per_shard` records each."""

    def __init__(self, directory: Path, per_shard: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.per_shard = per_shard
        self.count = 0
        self._writer: tf.io.TFRecordWriter | None = None
        self._shard_index = -1

    @property
    def current_shard(self) -> str:
        return f"part-{self._shard_index:05d}.tfrecord"

    def write(self, rec: Record) -> str:
        """Write one record; returns the shard file name it went to."""
        if self._writer is None or self.count % self.per_shard == 0:
            self._roll()
        assert self._writer is not None
        self._writer.write(serialize(rec))
        self.count += 1
        return self.current_shard

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._shard_index += 1
        self._writer = tf.io.TFRecordWriter(str(self.directory / self.current_shard))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def shard_paths(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(SHARD_GLOB))


def iter_records(directory: Path) -> Iterator[Record]:
    """Every record of a shard directory, in order, one at a time (bounded memory)."""
    paths = [str(p) for p in shard_paths(directory)]
    if not paths:
        return
    for raw in tf.data.TFRecordDataset(paths).as_numpy_iterator():
        yield deserialize(raw)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """For tf.data pipelines: the parsed feature dict of one serialized example."""
    return tf.io.parse_single_example(serialized, FEATURES)
