"""The split step on generated preprocess-style datasets (real JPEGs in TFRecord shards)."""

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import tensorflow as tf
from datagen import make_preprocessed
from kfp import compiler, dsl

from fauna.cli import main
from fauna.config import Config, SplitConfig
from fauna.dataset import SPLITS, DatasetError, read_manifest
from fauna.records import deserialize, iter_records, shard_paths
from fauna.steps.split import split_dataset

CLASSES = ["antelope", "bat", "beaver", "bobcat"]


@pytest.fixture(scope="module")
def pre(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_preprocessed(tmp_path_factory.mktemp("pre"), CLASSES, [40, 27, 13, 60])


def manifest_rows(directory: Path) -> list[dict[str, str]]:
    return list(read_manifest(directory / "manifest.csv"))


def records_by_split(directory: Path) -> dict[str, list]:
    return {name: list(iter_records(directory / name)) for name in SPLITS}


def test_same_seed_same_bytes_other_seed_other_split(pre: Path, tmp_path: Path):
    first = split_dataset(pre, tmp_path / "a", SplitConfig(seed=3))
    split_dataset(pre, tmp_path / "b", SplitConfig(seed=3))
    split_dataset(pre, tmp_path / "c", SplitConfig(seed=4))
    for name in ("manifest.csv", "split.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    for name in SPLITS:
        a, b = shard_paths(tmp_path / "a" / name), shard_paths(tmp_path / "b" / name)
        assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]
        # Byte-equal across processes too: protobuf maps are written in a fixed order.
        for raw in tf.data.TFRecordDataset([str(p) for p in a]).as_numpy_iterator():
            assert raw == tf.train.Example.FromString(raw).SerializeToString(deterministic=True)
    assert (tmp_path / "a/manifest.csv").read_bytes() != (tmp_path / "c/manifest.csv").read_bytes()
    assert first.counts == split_dataset(pre, tmp_path / "d", SplitConfig(seed=4)).counts


def test_stratified_per_class_and_shards_match_manifest(pre: Path, tmp_path: Path):
    cfg = SplitConfig()
    result = split_dataset(pre, tmp_path / "s", cfg)
    rows = manifest_rows(tmp_path / "s")
    totals = Counter(r["label"] for r in manifest_rows(pre))
    for label in CLASSES:
        counts = Counter(r["split"] for r in rows if r["label"] == label)
        n = totals[label]
        assert abs(counts["test"] - n * cfg.test_fraction) <= 1
        assert abs(counts["val"] - (n - counts["test"]) * cfg.val_fraction) <= 1
        assert counts["test"] >= 1 and counts["val"] >= 1 and counts["train"] >= 1
        assert result.per_class[label] == {**{s: counts[s] for s in SPLITS}, "total": n}

    records = records_by_split(tmp_path / "s")
    for name in SPLITS:
        expected = {(r["id"], r["label"], r["sha256"]) for r in rows if r["split"] == name}
        assert {(r.id, r.label, r.sha256) for r in records[name]} == expected
    # The input is sorted by class; the external shuffle mixes classes within each shard.
    first_shard = tf.data.TFRecordDataset(str(shard_paths(tmp_path / "s" / "train")[0]))
    assert len({deserialize(raw).label for raw in first_shard.as_numpy_iterator()}) > 1
    for name in ("classes.json", "source.json", "preprocess.json"):
        assert (tmp_path / "s" / name).read_bytes() == (pre / name).read_bytes()


def test_counts_reconcile(pre: Path, tmp_path: Path):
    result = split_dataset(pre, tmp_path / "s", SplitConfig())
    info = json.loads((tmp_path / "s/split.json").read_text())
    totals = info["totals"]
    assert totals["in"] == len(manifest_rows(pre)) == result.total
    assert totals["in"] == totals["train"] + totals["val"] + totals["test"]
    assert totals["reconciles"] is True and result.reconciles
    assert sum(c["total"] for c in info["per_class"].values()) == totals["in"]
    on_disk = {name: len(recs) for name, recs in records_by_split(tmp_path / "s").items()}
    assert on_disk == result.counts
    assert result.summary().startswith(f"split: {totals['in']} in = ")


def test_exact_duplicates_never_in_two_splits(tmp_path: Path):
    dupes = [("a/a_0000.jpg", "a")] * 3 + [
        ("a/a_0001.jpg", "b"),
        ("a/a_0002.jpg", "c"),
        ("b/b_0003.jpg", "b"),
        ("b/b_0003.jpg", "c"),
        ("c/c_0004.jpg", "a"),
    ]
    dupes += [(f"b/b_{i:04d}.jpg", "b") for i in range(5, 12)]
    pre = make_preprocessed(tmp_path / "pre", ["a", "b", "c"], [20, 15, 12], duplicates=dupes)
    for seed in range(6):
        out = tmp_path / f"s{seed}"
        split_dataset(pre, out, SplitConfig(seed=seed))
        where = defaultdict(set)
        for name, recs in records_by_split(out).items():
            for rec in recs:
                where[rec.sha256].add(name)
        assert all(len(splits) == 1 for splits in where.values())
        info = json.loads((out / "split.json").read_text())
        assert info["duplicates"]["cross_class_groups"] == 4
        assert info["totals"]["in"] == 47 + len(dupes)


def test_tiny_classes(tmp_path: Path):
    # one: 1 image; two: 2; three: 3; same: 2 identical images; empty: none; many: 20.
    classes = ["one", "two", "three", "same", "empty", "many"]
    pre = make_preprocessed(
        tmp_path / "pre",
        classes,
        [1, 2, 3, 1, 0, 20],
        duplicates=[("same/same_0000.jpg", "same")],
    )
    result = split_dataset(pre, tmp_path / "s", SplitConfig())
    pc = result.per_class
    assert pc["one"] == {"train": 1, "val": 0, "test": 0, "total": 1}
    assert pc["same"] == {"train": 2, "val": 0, "test": 0, "total": 2}
    assert pc["two"] == {"train": 1, "val": 0, "test": 1, "total": 2}
    assert pc["three"]["test"] == 1 and pc["three"]["train"] == 2
    assert pc["empty"]["total"] == 0
    assert pc["many"]["test"] == 3 and pc["many"]["val"] >= 1
    assert any("'one'" in note for note in result.notes)
    assert any("'same'" in note for note in result.notes)
    assert result.reconciles


def test_bad_input_is_one_clear_error(pre: Path, tmp_path: Path):
    with pytest.raises(DatasetError, match="must differ"):
        split_dataset(pre, pre, SplitConfig())
    with pytest.raises(DatasetError, match="missing classes.json"):
        split_dataset(tmp_path, tmp_path / "out", SplitConfig())
    empty = make_preprocessed(tmp_path / "empty", ["a"], [0])
    with pytest.raises(DatasetError, match="no images"):
        split_dataset(empty, tmp_path / "out", SplitConfig())
    # A manifest row whose record is missing from the shards is an error, not silent loss.
    bad = make_preprocessed(tmp_path / "bad", ["a"], [5])
    with (bad / "manifest.csv").open("a") as fh:
        fh.write("a/ghost.jpg,a,0,deadbeef,part-00000.tfrecord\n")
    with pytest.raises(DatasetError, match="no record"):
        split_dataset(bad, tmp_path / "out", SplitConfig())


def test_cli(pre: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "s"
    assert main(["split", "--data", str(pre), "--out", str(out), "--set", "split.seed=7"]) == 0
    assert json.loads((out / "split.json").read_text())["seed"] == 7
    assert "split: 140 in = " in capsys.readouterr().out
    assert main(["split", "--data", str(tmp_path / "nope"), "--out", str(out)]) == 2
    assert "error: missing classes.json" in capsys.readouterr().err


def test_component_wrapper(pre: Path, tmp_path: Path):
    from fauna.components.split import split

    compiler.Compiler().compile(split, str(tmp_path / "split.yaml"))  # a valid KFP component

    out = dsl.Dataset(name="splits", uri=str(tmp_path / "s"))
    split.python_func(
        config_json=json.dumps(Config().to_dict()),
        preprocessed=dsl.Dataset(name="pre", uri=str(pre)),
        splits=out,
    )
    info = json.loads((tmp_path / "s/split.json").read_text())
    assert out.metadata["images"] == info["totals"]["in"]
    assert out.metadata["test_images"] == info["totals"]["test"]
    assert out.metadata["reconciles"] is True
