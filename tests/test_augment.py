"""The balance/augment step: none, augment and oversample on a real split dataset."""

import dataclasses
import io
import json
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from datagen import make_preprocessed
from kfp import compiler, dsl
from PIL import Image
from stepkill import kill_at_random, partial_folders, tree_bytes

from fauna.cli import main
from fauna.config import AugmentConfig, Config, ConfigError, SplitConfig
from fauna.data.dataset import SPLITS, read_manifest
from fauna.data.records import iter_records, shard_paths
from fauna.step_output import MARKER, OutputError, mark_complete, read_marker
from fauna.steps.augment import augment_dataset
from fauna.steps.split import split_dataset

SIZE = 32


@pytest.fixture(scope="module")
def splits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("aug")
    pre = make_preprocessed(root / "pre", ["big", "mid", "small"], [40, 14, 5], size=SIZE)
    split_dataset(pre, root / "splits", SplitConfig())
    return root / "splits"


def shard_bytes(directory: Path) -> list[bytes]:
    return [p.read_bytes() for p in shard_paths(directory)]


def train_counts(directory: Path) -> Counter:
    return Counter(
        r["label"] for r in read_manifest(directory / "manifest.csv") if r["split"] == "train"
    )


def assert_val_test_unchanged(splits: Path, out: Path) -> None:
    for name in ("val", "test"):
        assert shard_bytes(out / name) == shard_bytes(splits / name) != []


@pytest.mark.parametrize("mode", ["none", "augment"])
def test_train_unchanged_on_disk(splits: Path, tmp_path: Path, mode: str):
    result = augment_dataset(splits, tmp_path / "b", AugmentConfig(mode=mode))
    assert shard_bytes(tmp_path / "b/train") == shard_bytes(splits / "train")
    assert_val_test_unchanged(splits, tmp_path / "b")
    info = json.loads((tmp_path / "b/augment.json").read_text())
    assert info["mode"] == mode and info["copies_added"] == 0 == result.copies_added
    assert info["train_time_augmentation"] is (mode == "augment")
    fields = {f.name for f in dataclasses.fields(AugmentConfig)}
    assert AugmentConfig(**{k: info[k] for k in fields}) == AugmentConfig(mode=mode)
    assert info["oversample_target"] is None
    rows = list(read_manifest(tmp_path / "b/manifest.csv"))
    assert [r["id"] for r in rows] == [r["id"] for r in read_manifest(splits / "manifest.csv")]
    assert all(r["augmented_from"] == "" for r in rows)
    for name in ("classes.json", "source.json", "preprocess.json", "split.json"):
        assert (tmp_path / "b" / name).read_bytes() == (splits / name).read_bytes()


def test_oversample_levels_every_class_with_real_augmented_jpegs(splits: Path, tmp_path: Path):
    out = tmp_path / "b"
    result = augment_dataset(splits, out, AugmentConfig(mode="oversample"))
    before = train_counts(splits)
    largest = max(before.values())
    assert result.after == {label: largest for label in before}
    assert result.copies_added == sum(largest - n for n in before.values())
    assert_val_test_unchanged(splits, out)

    rows = {r["id"]: r for r in read_manifest(out / "manifest.csv")}
    records = {r.id: r for r in iter_records(out / "train")}
    train_ids = {i for i, r in rows.items() if r["split"] == "train"}
    assert set(records) == train_ids
    copies = [r for r in rows.values() if r["augmented_from"]]
    assert len(copies) == result.copies_added
    for row in copies:
        source = records[row["augmented_from"]]
        copy = records[row["id"]]
        assert row["id"].startswith(f"{source.id}#aug") and rows[source.id]["split"] == "train"
        assert copy.label == source.label == row["label"] and row["split"] == "train"
        image = Image.open(io.BytesIO(copy.encoded))
        assert image.format == "JPEG" and image.size == (SIZE, SIZE)
        a = np.asarray(image.convert("RGB"), dtype=float)
        b = np.asarray(Image.open(io.BytesIO(source.encoded)).convert("RGB"), dtype=float)
        assert np.abs(a - b).mean() > 1.0

    info = json.loads((out / "augment.json").read_text())
    assert info["train_time_augmentation"] is True and info["oversample_target"] == largest
    assert info["per_class"]["small"]["before"] == before["small"]
    assert info["per_class"]["small"]["added"] == largest - before["small"]
    assert info["totals"]["train_after"] == len(train_ids)


def test_oversample_is_deterministic(splits: Path, tmp_path: Path):
    cfg = AugmentConfig(mode="oversample", seed=5)
    augment_dataset(splits, tmp_path / "a", cfg)
    augment_dataset(splits, tmp_path / "b", cfg)
    manifest = "manifest.csv"
    assert (tmp_path / "a" / manifest).read_bytes() == (tmp_path / "b" / manifest).read_bytes()
    assert shard_bytes(tmp_path / "a/train") == shard_bytes(tmp_path / "b/train")
    # Byte-equal across processes too: protobuf maps are written in a fixed order.
    paths = [str(p) for p in shard_paths(tmp_path / "a/train")]
    for raw in tf.data.TFRecordDataset(paths).as_numpy_iterator():
        assert raw == tf.train.Example.FromString(raw).SerializeToString(deterministic=True)


def test_oversample_to_target_never_reduces(splits: Path, tmp_path: Path):
    before = train_counts(splits)
    target = sorted(before.values())[1]  # between the smallest and the largest class
    result = augment_dataset(
        splits, tmp_path / "b", AugmentConfig(mode="oversample", target_count=target)
    )
    for label, n in before.items():
        assert result.after[label] == max(n, target)
    assert train_counts(tmp_path / "b") == Counter(result.after)
    assert sum(1 for _ in iter_records(tmp_path / "b/train")) == sum(result.after.values())


def test_rerun_into_same_directory_leaves_no_stale_shards(splits: Path, tmp_path: Path):
    augment_dataset(splits, tmp_path / "b", AugmentConfig(mode="oversample"))
    augment_dataset(splits, tmp_path / "b", AugmentConfig(mode="none"))
    assert shard_bytes(tmp_path / "b/train") == shard_bytes(splits / "train")
    assert_val_test_unchanged(splits, tmp_path / "b")


def test_bad_input(splits: Path, tmp_path: Path, capsys):
    off = {k: 0 for k in ("rotation", "zoom", "translation", "contrast")}
    with pytest.raises(ConfigError, match="needs at least one"):
        augment_dataset(splits, tmp_path / "b", AugmentConfig(horizontal_flip=False, **off))
    with pytest.raises(ConfigError, match="augment.mode: Input should be .none."):
        augment_dataset(splits, tmp_path / "b", AugmentConfig(mode="mirror"))
    pre = make_preprocessed(tmp_path / "pre", ["a", "b"], [3, 3])
    line = "is the output of `fauna preprocess`, but this step reads the output of `fauna split`"
    with pytest.raises(OutputError, match=line.replace("(", r"\(")):
        augment_dataset(pre, tmp_path / "b", AugmentConfig())
    augment_dataset(splits, tmp_path / "b", AugmentConfig(mode="oversample"))
    with pytest.raises(OutputError, match="output of `fauna augment`, but this step reads"):
        augment_dataset(tmp_path / "b", tmp_path / "c", AugmentConfig(mode="oversample"))
    # Another step's completed output is not overwritten either.
    other = make_preprocessed(tmp_path / "other", ["a", "b"], [2, 2])
    mark_complete(other, "split")
    with pytest.raises(OutputError, match="not empty and is the output of `fauna split`"):
        augment_dataset(splits, other, AugmentConfig())
    assert not (tmp_path / "c").exists() and partial_folders(tmp_path / "c") == []


def test_a_users_folder_is_refused_and_left_untouched(splits: Path, tmp_path: Path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "augment.json").write_text("{}")
    with pytest.raises(OutputError, match="not empty and is not a fauna output"):
        augment_dataset(splits, mine, AugmentConfig())
    assert [p.name for p in mine.iterdir()] == ["augment.json"]
    assert (mine / "augment.json").read_text() == "{}"


def test_killed_at_a_random_moment_then_rerun_gives_the_same_bytes(splits: Path, tmp_path: Path):
    cfg = AugmentConfig(mode="oversample")
    started = time.monotonic()
    augment_dataset(splits, tmp_path / "reference", cfg)
    window = time.monotonic() - started
    out = tmp_path / "out"
    argv = ["augment", "--data", str(splits), "--out", str(out), "--mode", "oversample"]
    seed = int.from_bytes(os.urandom(4), "little")
    outcome = kill_at_random(argv, out, 1.5 * window, seed)
    print(f"kill test (seed {seed}): {outcome}")
    if outcome["killed"]:
        assert not out.exists() or read_marker(out) is not None
        for partial in outcome["partial"]:
            assert not (partial / MARKER).exists()
    augment_dataset(splits, out, cfg)
    assert partial_folders(out) == []
    assert tree_bytes(out) == tree_bytes(tmp_path / "reference")


def test_cli_mode_flag_and_config_default(splits: Path, tmp_path: Path):
    out = tmp_path / "b"
    args = ["augment", "--data", str(splits), "--out", str(out)]
    assert main([*args, "--mode", "oversample"]) == 0
    assert json.loads((out / "augment.json").read_text())["mode"] == "oversample"
    assert main([*args, "--set", "augment.mode=none"]) == 0
    assert json.loads((out / "augment.json").read_text())["mode"] == "none"
    assert main(args) == 0
    assert json.loads((out / "augment.json").read_text())["mode"] == Config().augment.mode


def test_component_wrapper(splits: Path, tmp_path: Path):
    from fauna.components.augment import augment

    compiler.Compiler().compile(augment, str(tmp_path / "augment.yaml"))  # a valid KFP component

    cfg = Config().merged({"augment": {"mode": "oversample"}})
    out = dsl.Dataset(name="augmented", uri=str(tmp_path / "b"))
    augment.python_func(
        mode="oversample",
        augment_config=cfg.to_dict()["augment"],
        splits=dsl.Dataset(name="splits", uri=str(splits)),
        augmented=out,
    )
    info = json.loads((tmp_path / "b/augment.json").read_text())
    assert out.metadata["mode"] == "oversample"
    assert out.metadata["copies_added"] == info["copies_added"] > 0
    assert out.metadata["train_images"] == info["totals"]["train_after"]
    assert {f"{s}_images" for s in SPLITS} <= set(out.metadata)
