"""The split step on generated preprocess-style datasets (real JPEGs in TFRecord shards)."""

import json
import os
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import tensorflow as tf
from datagen import make_preprocessed
from kfp import compiler, dsl
from stepkill import kill_at_random, partial_folders, tree_bytes

from fauna.cli import main
from fauna.config import Config, SplitConfig
from fauna.data.dataset import SPLITS, DatasetError, read_manifest, write_json, write_manifest
from fauna.data.records import deserialize, iter_records, shard_paths
from fauna.step_output import MARKER, OutputError, mark_complete, read_marker
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
    assert result.summary().startswith(f"{totals['in']} in = ")


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
    with pytest.raises(DatasetError, match="must differ"):
        split_dataset(pre, pre / "inside", SplitConfig())
    with pytest.raises(OutputError, match="not a completed step output.*`fauna preprocess`"):
        split_dataset(tmp_path, tmp_path / "out", SplitConfig())
    empty = make_preprocessed(tmp_path / "empty", ["a", "b"], [0, 0])
    with pytest.raises(DatasetError, match="no images"):
        split_dataset(empty, tmp_path / "out", SplitConfig())
    # A manifest row whose record is missing from the shards is an error, not silent loss.
    bad = make_preprocessed(tmp_path / "bad", ["a", "b"], [5, 5])
    with (bad / "manifest.csv").open("a") as fh:
        fh.write("a/ghost.jpg,a,0,deadbeef,part-00000.tfrecord\n")
    with pytest.raises(DatasetError, match="no record"):
        split_dataset(bad, tmp_path / "out", SplitConfig())
    assert not (tmp_path / "out").exists() and partial_folders(tmp_path / "out") == []


def test_one_class_is_refused(tmp_path: Path, capsys):
    # classes.json may list more classes; what counts is how many have images.
    one = make_preprocessed(tmp_path / "one", ["images", "other"], [6, 0])
    out = tmp_path / "out"
    assert main(["split", "--data", str(one), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "one class only (images)" in err and "at least two" in err
    assert not out.exists()


def test_data_must_be_a_preprocess_output(tmp_path: Path, capsys):
    """`fauna split --data <ingest output>` says which step's output it expects, in one line."""
    raw = tmp_path / "raw"
    write_manifest(
        raw / "manifest.csv", [{"path": "images/a/1.jpg", "label": "a"}], ["path", "label"]
    )
    write_json(raw / "classes.json", ["a", "b"])
    mark_complete(raw, "ingest")
    assert main(["split", "--data", str(raw), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"fauna split: error: --data {raw} is the output of `fauna ingest`, "
        "but this step reads the output of `fauna preprocess`"
    )


def test_a_users_folder_is_refused_and_left_untouched(pre: Path, tmp_path: Path):
    mine = tmp_path / "mine"
    (mine / "train").mkdir(parents=True)
    (mine / "train" / "part-00000.tfrecord").write_bytes(b"my own records")
    with pytest.raises(OutputError, match="not empty and is not a fauna output"):
        split_dataset(pre, mine, SplitConfig())
    assert (mine / "train" / "part-00000.tfrecord").read_bytes() == b"my own records"
    assert [p.name for p in mine.iterdir()] == ["train"]


def test_killed_at_a_random_moment_then_rerun_gives_the_same_bytes(pre: Path, tmp_path: Path):
    from fauna.steps.augment import augment_dataset

    started = time.monotonic()
    split_dataset(pre, tmp_path / "reference", SplitConfig())
    window = time.monotonic() - started
    out = tmp_path / "out"
    seed = int.from_bytes(os.urandom(4), "little")
    outcome = kill_at_random(
        ["split", "--data", str(pre), "--out", str(out)], out, 1.5 * window, seed
    )
    print(f"kill test (seed {seed}): {outcome}")
    if outcome["killed"]:
        assert not out.exists() or read_marker(out) is not None
        for partial in outcome["partial"]:
            assert not (partial / MARKER).exists()
            with pytest.raises(OutputError, match="not a completed step output"):
                augment_dataset(partial, tmp_path / "aug", Config().augment)
    split_dataset(pre, out, SplitConfig())
    assert partial_folders(out) == []
    assert tree_bytes(out) == tree_bytes(tmp_path / "reference")


def test_cli(pre: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    out = tmp_path / "s"
    assert main(["split", "--data", str(pre), "--out", str(out), "--set", "split.seed=7"]) == 0
    assert json.loads((out / "split.json").read_text())["seed"] == 7
    captured = capsys.readouterr()  # the summary once, logged; nothing on stdout
    assert captured.out == "" and captured.err.count("[split] 140 in = ") == 1
    assert main(["split", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err
    assert (
        "error: --data" in err
        and "does not exist: it should be the output of `fauna preprocess`" in err
    )


def test_component_wrapper(pre: Path, tmp_path: Path):
    from fauna.components.split import split

    compiler.Compiler().compile(split, str(tmp_path / "split.yaml"))  # a valid KFP component

    out = dsl.Dataset(name="splits", uri=str(tmp_path / "s"))
    split.python_func(
        split_config=Config().to_dict()["split"],
        preprocessed=dsl.Dataset(name="pre", uri=str(pre)),
        splits=out,
    )
    info = json.loads((tmp_path / "s/split.json").read_text())
    assert out.metadata["images"] == info["totals"]["in"]
    assert out.metadata["test_images"] == info["totals"]["test"]
    assert out.metadata["reconciles"] is True
