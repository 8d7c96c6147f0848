"""TFRecord shards: the streaming training format.

Why TFRecord: tf.data reads it in parallel with no per-file overhead, shards
travel well through S3, and images stay JPEG-encoded (small) until the training
input pipeline decodes them. Memory stays bounded whatever the dataset size.

Records are written and read by `fauna.data.tfrecord` (the same bytes, in plain Python):
the data steps never import TensorFlow. TensorFlow is imported only for tf.data
pipelines (`features`, `parse_example`), inside those functions.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fauna.data import tfrecord

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


@dataclass(frozen=True)
class Record:
    encoded: bytes  # JPEG bytes
    label_index: int
    label: str
    sha256: str
    id: str  # relative path of the source image (or id of an augmented copy)


def serialize(rec: Record) -> bytes:
    """The tf.train.Example bytes of a record; the same record gives the same bytes in
    every process (protobuf's deterministic serialization, byte for byte)."""
    return tfrecord.encode_example(
        {
            "image/encoded": rec.encoded,
            "image/class/label": rec.label_index,
            "image/class/text": rec.label.encode(),
            "image/sha256": rec.sha256.encode(),
            "image/id": rec.id.encode(),
        }
    )


def deserialize(data: bytes) -> Record:
    f = tfrecord.decode_example(data)

    def value(key: str, kind: type) -> Any:
        found = f.get(key)
        if not isinstance(found, kind):
            raise tfrecord.TFRecordError(f"not a fauna image record: no {key}")
        return found

    return Record(
        encoded=value("image/encoded", bytes),
        label_index=value("image/class/label", int),
        label=value("image/class/text", bytes).decode(),
        sha256=value("image/sha256", bytes).decode(),
        id=value("image/id", bytes).decode(),
    )


class ShardWriter:
    """Writes records into `directory/part-NNNNN.tfrecord`, `per_shard` records each."""

    def __init__(self, directory: Path, per_shard: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.per_shard = per_shard
        self.count = 0
        self._writer: tfrecord.Writer | None = None
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
        self._writer = tfrecord.Writer(self.directory / self.current_shard)

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
        self.directory = Path(directory)
        self.per_shard = max(1, per_shard)
        self.rng = random.Random(seed)
        self.count = 0
        self.buckets_dir = self.directory / ".buckets"
        self.buckets_dir.mkdir(parents=True, exist_ok=True)
        n = min(MAX_BUCKETS, max(1, math.ceil(expected / self.per_shard)))
        self.bucket_paths = [self.buckets_dir / f"bucket-{i:05d}" for i in range(n)]
        self.writers = [tfrecord.Writer(p) for p in self.bucket_paths]

    def write(self, rec: Record) -> None:
        self.writers[self.count % len(self.writers)].write(serialize(rec))
        self.count += 1

    def close(self) -> int:
        """Write the final shards; returns how many."""
        for writer in self.writers:
            writer.close()
        shard = 0
        for path in self.bucket_paths:
            items = list(tfrecord.read(path))
            path.unlink()
            self.rng.shuffle(items)
            for start in range(0, len(items), self.per_shard):
                name = self.directory / f"part-{shard:05d}.tfrecord"
                with tfrecord.Writer(name) as writer:
                    for item in items[start : start + self.per_shard]:
                        writer.write(item)
                shard += 1
        self.buckets_dir.rmdir()
        return shard


def shard_paths(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(SHARD_GLOB))


def iter_records(directory: Path) -> Iterator[Record]:
    """Every record of a shard directory, in order, one at a time (bounded memory)."""
    for path in shard_paths(directory):
        for raw in tfrecord.read(path):
            yield deserialize(raw)


def parse_example(serialized: tf.Tensor) -> dict[str, tf.Tensor]:
    """For tf.data pipelines: the parsed feature dict of one serialized example."""
    import tensorflow as tf

    return tf.io.parse_single_example(serialized, features())
