"""TFRecord shards: the streaming training format.

Why TFRecord: tf.data reads it in parallel with no per-file overhead, shards
travel well through S3, and images stay JPEG-encoded (small) until the training
input pipeline decodes them. Memory stays bounded whatever the dataset size.

TensorFlow is imported inside the functions that need it, never at module level:
importing this module (as `fauna split --help` does) must stay instant.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import tensorflow as tf

SHARD_GLOB = "part-*.tfrecord"
# ShuffledShardWriter: more open bucket files than this and a bucket holds more than a shard.
MAX_BUCKETS = 256


def features() -> dict[str, Any]:
    """The feature spec of one serialized record, for tf.io.parse_single_example."""
    import tensorflow as tf

    return {
        "image/encoded": tf.io.FixedLenFeature([], tf.string),
        "image/class/label": tf.io.FixedLenFeature([], tf.int64),
        "image/class/text": tf.io.FixedLenFeature([], tf.string),
        "image/sha256": tf.io.FixedLenFeature([], tf.string),
        "image/id": tf.io.FixedLenFeature([], tf.string),
    }


def __getattr__(name: str) -> Any:
    """`FEATURES` stays importable (built on first use, so importing this module is light)."""
    if name == "FEATURES":
        return features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class Record:
    encoded: bytes  # JPEG bytes
    label_index: int
    label: str
    sha256: str
    id: str  # relative path of the source image (or id of an augmented copy)


def serialize(rec: Record) -> bytes:
    import tensorflow as tf

    def as_bytes(value: bytes) -> tf.train.Feature:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    example = tf.train.Example(
        features=tf.train.Features(
            feature={
                "image/encoded": as_bytes(rec.encoded),
                "image/class/label": tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[rec.label_index])
                ),
                "image/class/text": as_bytes(rec.label.encode()),
                "image/sha256": as_bytes(rec.sha256.encode()),
                "image/id": as_bytes(rec.id.encode()),
            }
        )
    )
    # deterministic: the same record gives the same bytes in every process (stable map order)
    return example.SerializeToString(deterministic=True)


def deserialize(data: bytes) -> Record:
    import tensorflow as tf

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
        import tensorflow as tf

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


class ShuffledShardWriter:
    """Writes records as shards in a seeded random order, holding one shard in memory.

    Pass one deals records over temporary buckets in turn, so each bucket gets an
    even sample of the whole (class-sorted) stream; `close()` then loads each
    bucket, shuffles it and writes it out as `part-NNNNN.tfrecord`.
    """

    def __init__(self, directory: Path, expected: int, per_shard: int, seed: str) -> None:
        import tensorflow as tf

        self.directory = Path(directory)
        self.per_shard = max(1, per_shard)
        self.rng = random.Random(seed)
        self.count = 0
        self.buckets_dir = self.directory / ".buckets"
        self.buckets_dir.mkdir(parents=True, exist_ok=True)
        n = min(MAX_BUCKETS, max(1, math.ceil(expected / self.per_shard)))
        self.bucket_paths = [self.buckets_dir / f"bucket-{i:05d}" for i in range(n)]
        self.writers = [tf.io.TFRecordWriter(str(p)) for p in self.bucket_paths]

    def write(self, rec: Record) -> None:
        self.writers[self.count % len(self.writers)].write(serialize(rec))
        self.count += 1

    def close(self) -> int:
        """Write the final shards; returns how many."""
        import tensorflow as tf

        for writer in self.writers:
            writer.close()
        shard = 0
        for path in self.bucket_paths:
            items = list(tf.data.TFRecordDataset(str(path)).as_numpy_iterator())
            path.unlink()
            self.rng.shuffle(items)
            for start in range(0, len(items), self.per_shard):
                name = self.directory / f"part-{shard:05d}.tfrecord"
                with tf.io.TFRecordWriter(str(name)) as writer:
                    for item in items[start : start + self.per_shard]:
                        writer.write(item)
                shard += 1
        self.buckets_dir.rmdir()
        return shard


def shard_paths(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(SHARD_GLOB))


def iter_records(directory: Path) -> Iterator[Record]:
    """Every record of a shard directory, in order, one at a time (bounded memory)."""
    paths = [str(p) for p in shard_paths(directory)]
    if not paths:
        return
    import tensorflow as tf

    for raw in tf.data.TFRecordDataset(paths).as_numpy_iterator():
        yield deserialize(raw)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """For tf.data pipelines: the parsed feature dict of one serialized example."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, features())
