"""fauna.data.tfrecord writes and reads what TensorFlow does: byte for byte, both ways."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from fauna.data import tfrecord
from fauna.data.records import Record, ShardWriter, deserialize, iter_records, serialize


def _records(n: int) -> list[Record]:
    rng = random.Random(7)
    return [
        Record(
            encoded=rng.randbytes(rng.choice([0, 1, 127, 128, 300, 20_000])),
            label_index=rng.choice([0, 1, 29, 127, 128, 300, 2**40]),
            label=rng.choice(["antelope", "german+shepherd", "ours: l'été"]),
            sha256=f"{rng.getrandbits(256):064x}",
            id=f"test/x/{i:03d}-é.jpg",
        )
        for i in range(n)
    ]


def _tf_serialize(rec: Record) -> bytes:
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
    return example.SerializeToString(deterministic=True)


def test_examples_are_tensorflow_s_bytes_and_read_back() -> None:
    for rec in _records(40):
        assert serialize(rec) == _tf_serialize(rec)
        assert deserialize(_tf_serialize(rec)) == rec


def test_tensorflow_reads_our_shards_and_we_read_its(tmp_path: Path) -> None:
    import tensorflow as tf

    from fauna.data.records import parse_example

    records = _records(25)
    with ShardWriter(tmp_path / "ours", per_shard=10) as writer:
        for rec in records:
            writer.write(rec)
    paths = sorted(str(p) for p in (tmp_path / "ours").glob("*.tfrecord"))
    assert len(paths) == 3
    parsed = [parse_example(s) for s in tf.data.TFRecordDataset(paths)]  # checksums checked
    assert [p["image/id"].numpy().decode() for p in parsed] == [r.id for r in records]
    assert [int(p["image/class/label"]) for p in parsed] == [r.label_index for r in records]
    assert [p["image/encoded"].numpy() for p in parsed] == [r.encoded for r in records]

    (tmp_path / "theirs").mkdir()
    with tf.io.TFRecordWriter(str(tmp_path / "theirs" / "part-00000.tfrecord")) as writer:
        for rec in records:
            writer.write(_tf_serialize(rec))
    assert list(iter_records(tmp_path / "theirs")) == records
    ours = (tmp_path / "ours" / "part-00000.tfrecord").read_bytes()
    with tf.io.TFRecordWriter(str(tmp_path / "same.tfrecord")) as writer:
        for rec in records[:10]:
            writer.write(_tf_serialize(rec))
    assert (tmp_path / "same.tfrecord").read_bytes() == ours


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_file_is_refused(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "part-00000.tfrecord"
    with tfrecord.Writer(path) as writer:
        writer.write(b"x" * 100)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:-10]
    else:
        data[50] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(tfrecord.TFRecordError, match="part-00000.tfrecord"):
        list(tfrecord.read(path))


def test_writing_and_reading_shards_imports_no_tensorflow(tmp_path: Path) -> None:
    """What preprocess, split and augment do with records starts no TensorFlow."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom pathlib import Path\n"
        "from fauna.data.records import Record, ShardWriter, ShuffledShardWriter, iter_records\n"
        f"root = Path({str(tmp_path)!r})\n"
        "recs = [Record(b'x' * i, i % 3, 'c', 'ab', f'id{i}') for i in range(30)]\n"
        "with ShardWriter(root / 'a', per_shard=7) as w:\n"
        "    [w.write(r) for r in recs]\n"
        "s = ShuffledShardWriter(root / 'b', expected=30, per_shard=7, seed='s')\n"
        "[s.write(r) for r in iter_records(root / 'a')]\n"
        "s.close()\n"
        "assert sorted(r.id for r in iter_records(root / 'b')) == sorted(r.id for r in recs)\n"
        "print('LOADED', *[m for m in ('tensorflow', 'keras') if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rsplit("LOADED", 1)[1].split() == []
