"""train: settings checked, recipes per start, the paper's backbones end to end, resume.

Real Keras models on tiny generated split datasets in the fauna.data.records format
(weights none, or a weights file standing in for ImageNet: nothing here downloads).
Training outputs are shared through module-scoped fixtures to keep the suite fast.
Checkpoint faults (kill -9, damaged files, S3 outages) are in test_checkpoints.py;
learnability on real scanned digits in test_learnability.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fauna.config import Config, ConfigError
from fauna.data.records import Record, ShardWriter
from fauna.data.synthetic import class_image
from fauna.step_output import mark_complete

PAPER_SIZE = 75  # InceptionV3's minimum
METRICS = ("loss", "accuracy", "top3_accuracy", "auc", "macro_f1")


def make_split_dataset(
    root: Path,
    num_classes: int = 3,
    per_class: dict[str, int] | None = None,
    size: int = PAPER_SIZE,
    seed: int = 0,
    augment: dict | None = None,
) -> Path:
    """A completed split output: {train,val,test}/part-*.tfrecord + the JSON files beside them.

    With `augment` (AugmentConfig fields) it is an augment output with that augment.json.
    """
    per_class = per_class or {"train": 6, "val": 3, "test": 3}
    classes = [f"species+{chr(97 + i)}" for i in range(num_classes)]
    rng = random.Random(seed)
    for split, count in per_class.items():
        with ShardWriter(root / split, per_shard=max(1, count * num_classes // 2)) as writer:
            for i in range(count):  # classes interleaved, two shards per split
                for index, label in enumerate(classes):
                    buffer = io.BytesIO()
                    class_image(index, num_classes, (size, size), rng).save(buffer, "JPEG")
                    data = buffer.getvalue()
                    sha = hashlib.sha256(data).hexdigest()
                    writer.write(Record(data, index, label, sha, f"{split}/{label}/{i}.jpg"))
    (root / "classes.json").write_text(json.dumps(classes))
    (root / "source.json").write_text(
        json.dumps({"source": "test", "name": "tiny", "synthetic": True, "version": f"s{seed}"})
    )
    (root / "preprocess.json").write_text(
        json.dumps({"image_size": size, "mode": "crop", "jpeg_quality": 95})
    )
    if augment is not None:
        info = {**augment, "train_time_augmentation": augment.get("mode", "augment") != "none"}
        (root / "augment.json").write_text(json.dumps(info))
    mark_complete(root, "augment" if augment is not None else "split")
    return root


def tiny_config(**train: object) -> Config:
    """weights=none, batch 4, a 16-unit head; per-backbone overrides neutralised (VGG16
    keeps its from-scratch learning rate: at the base 1e-3 it does not learn)."""
    settings = {
        "weights": "none",
        "batch_size": 4,
        "dense_units": [16],
        "mixed_precision": False,
        "overrides": {
            "vgg16": {"scratch_learning_rate": 1e-4},
            "resnet50": {"batch_size": 4, "learning_rate": 1e-3},
            "inceptionv3": {"batch_size": 4, "decay": 1e-4},
        },
        **train,
    }
    return Config.from_dict({"train": settings})


class Preempted(Exception):
    """Stands in for a killed pod."""


def kill_after(epochs: int):
    import keras

    class KillAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 >= epochs:
                raise Preempted(f"killed after epoch {epoch}")

    return KillAfter()


def top1_on_test_split(model, data: Path, size: int, classes: int) -> float:
    from fauna.data.input_pipeline import make_dataset

    correct = total = 0
    for images, labels in make_dataset(data / "test", size, classes, 32):
        predicted = np.argmax(model(images, training=False), axis=1)
        correct += int(np.sum(predicted == np.argmax(labels, axis=1)))
        total += len(predicted)
    return correct / total


# ---------------------------------------------------------- settings (no training)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        (
            "head_epochs",
            -1,
            "train.head_epochs: Input should be greater than or equal to 0, got -1",
        ),
        (
            "fine_tune_epochs",
            -1,
            "train.fine_tune_epochs: Input should be greater than or equal to 0",
        ),
        ("learning_rate", -1, "train.learning_rate: Input should be greater than 0, got -1"),
        (
            "fine_tune_learning_rate",
            0,
            "train.fine_tune_learning_rate: Input should be greater than 0",
        ),
        (
            "scratch_learning_rate",
            "nan",
            "train.scratch_learning_rate: Input should be a finite number",
        ),
        ("batch_size", 0, "train.batch_size: Input should be greater than or equal to 1, got 0"),
        ("dropout", 1.5, "train.dropout: Input should be less than 1, got 1.5"),
        ("dropout", 1, "train.dropout: Input should be less than 1, got 1"),
        ("l1", -0.1, "train.l1: Input should be greater than or equal to 0, got -0.1"),
        ("l2", -1, "train.l2: Input should be greater than or equal to 0"),
        ("decay", -1e-7, "train.decay: Input should be greater than or equal to 0"),
        (
            "fine_tune_layers",
            -2,
            "train.fine_tune_layers: Input should be greater than or equal to -1",
        ),
        (
            "dense_units",
            [64, 0],
            "train.dense_units[1]: Input should be greater than or equal to 1",
        ),
        (
            "early_stopping_patience",
            -1,
            "train.early_stopping_patience: Input should be greater than",
        ),
        ("reduce_lr_factor", 1.0, "train.reduce_lr_factor: Input should be less than 1, got 1.0"),
        ("backbones", [], "train.backbones: List should have at least 1 item"),
        ("head_feature_views", -1, "train.head_feature_views: Input should be greater than"),
        ("head_feature_views", 101, "train.head_feature_views: Input should be less than"),
    ],
)
def test_every_training_setting_is_checked_in_one_line(key, value, message) -> None:
    with pytest.raises(ConfigError) as caught:
        Config.from_dict({"train": {key: value}})
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_epochs_need_one_in_all_and_overrides_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"head_epochs \+ fine_tune_epochs must be at least 1"):
        Config.from_dict({"train": {"head_epochs": 0, "fine_tune_epochs": 0}})
    with pytest.raises(
        ConfigError,
        match="train.overrides.resnet50.batch_size: Input should be greater than or equal to 1",
    ):
        Config.from_dict({"train": {"overrides": {"resnet50": {"batch_size": 0}}}})
    with pytest.raises(ConfigError, match="unknown key.*train.overrides.vgg16: batchsize"):
        Config.from_dict({"train": {"overrides": {"vgg16": {"batchsize": 8}}}})


def test_override_names_are_registry_names(tmp_path: Path) -> None:
    """`ResNet50:` applies to resnet50 (it was silently ignored); two spellings are refused."""
    from fauna.config import load_config

    cfg = load_config(overrides={"train.overrides.ResNet50.batch_size": 8})
    assert cfg.train.for_backbone("resnet50").batch_size == 8
    assert cfg.train.for_backbone("RESNET50").learning_rate == 1e-3  # the paper's, kept
    assert "ResNet50" not in cfg.train.overrides
    with pytest.raises(ConfigError, match="names resnet50 twice"):
        Config.from_dict({"train": {"overrides": {"ResNet50": {}, "resnet50": {}}}})
    # YAML 1.1 reads 1e-4 as text; a number is meant
    assert load_config(overrides={"train.learning_rate": "1e-4"}).train.learning_rate == 1e-4


def test_epochs_split_and_class_weights() -> None:
    from fauna.config import BackboneTrainConfig
    from fauna.training import TrainError
    from fauna.training.recipe import with_total_epochs
    from fauna.training.trainset import balanced_class_weights

    paper = BackboneTrainConfig(head_epochs=10, fine_tune_epochs=90)
    split = {n: with_total_epochs(paper, n) for n in (1, 2, 10, 50)}
    assert {n: (c.head_epochs, c.fine_tune_epochs) for n, c in split.items()} == {
        1: (1, 0),
        2: (1, 1),
        10: (1, 9),
        50: (5, 45),
    }
    with pytest.raises(TrainError):
        with_total_epochs(paper, 0)
    weights = balanced_class_weights([10, 30, 0])
    assert weights == {0: 2.0, 1: 40 / 60, 2: 1.0}


def test_a_recipe_for_each_start() -> None:
    from fauna.config import BackboneTrainConfig
    from fauna.training.recipe import plan_recipe, scratch_batchnorm_momentum, warmup_cosine

    cfg = BackboneTrainConfig(head_epochs=2, fine_tune_epochs=3, fine_tune_layers=20)
    pretrained = plan_recipe(cfg, steps_per_epoch=40)
    assert [(p.name, p.start, p.end, p.trainable_layers) for p in pretrained.phases] == [
        ("head", 0, 2, None),
        ("fine_tune", 2, 5, 20),
    ]
    assert pretrained.freeze_batchnorm and not pretrained.recalibrate_batchnorm

    from_random = BackboneTrainConfig(head_epochs=2, fine_tune_epochs=3, weights="none")
    scratch = plan_recipe(from_random, 40)
    [phase] = scratch.phases
    assert (phase.name, phase.start, phase.end, phase.trainable_layers) == ("scratch", 0, 5, -1)
    assert phase.learning_rate == cfg.scratch_learning_rate and phase.schedule == "cosine"
    assert not scratch.freeze_batchnorm and scratch.recalibrate_batchnorm
    assert scratch.batchnorm_momentum == 0.9  # a short run: statistics that keep up
    assert scratch_batchnorm_momentum(10_000) == 0.99
    # no empty phases: one epoch in all trains the head only
    head_only = plan_recipe(BackboneTrainConfig(head_epochs=1, fine_tune_epochs=0), 40)
    assert [p.name for p in head_only.phases] == ["head"]

    curve = [warmup_cosine(step, 200, 1e-3) for step in range(200)]
    assert curve[0] == pytest.approx(5e-5) and max(curve) == pytest.approx(1e-3)
    assert curve.index(max(curve)) == 19 and curve[-1] < 1e-6
    assert all(a >= b for a, b in zip(curve[19:], curve[20:], strict=False))


def test_augment_json_is_read_as_the_augment_step_writes_it(tmp_path: Path) -> None:
    """Through the real split and augment steps: the AugmentConfig fields at the top level."""
    from datagen import make_preprocessed

    from fauna.cli import main
    from fauna.training.trainset import augment_settings

    pre = make_preprocessed(tmp_path / "pre", ["a", "b"], 8, size=32)
    mark_complete(pre, "preprocess")
    assert main(["split", "--data", str(pre), "--out", str(tmp_path / "split")]) == 0
    settings = ["--set", "augment.rotation=0.05", "--set", "augment.seed=7"]
    args = ["augment", "--data", str(tmp_path / "split"), "--out", str(tmp_path / "aug")]
    assert main([*args, *settings]) == 0
    aug = augment_settings(tmp_path / "aug")
    assert (aug.mode, aug.rotation, aug.seed, aug.zoom) == ("augment", 0.05, 7, 0.1)
    assert augment_settings(tmp_path / "split") is None  # no augment.json: no augmentation
    off = ["augment", "--data", str(tmp_path / "split"), "--out", str(tmp_path / "off")]
    assert main([*off, "--mode", "none"]) == 0
    assert augment_settings(tmp_path / "off") is None


# ------------------------------------------------- the paper's backbones, end to end

# vgg16 runs two epochs and the serving export; the others one epoch (time).
PAPER_RUNS = {"vgg16": (2, True), "resnet50": (1, False), "inceptionv3": (1, False)}
AUGMENT = {"mode": "augment", "horizontal_flip": True, "rotation": 0.05, "contrast": 0.1}


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_split_dataset(tmp_path_factory.mktemp("paper-data"), augment=AUGMENT)


@pytest.fixture(scope="module")
def paper_models(tmp_path_factory: pytest.TempPathFactory, paper_data: Path) -> dict[str, Path]:
    from fauna.steps.train import train_backbone

    root = tmp_path_factory.mktemp("paper-models")
    cfg = tiny_config()
    for backbone, (epochs, export) in PAPER_RUNS.items():
        train_backbone(
            paper_data, root / backbone, backbone, cfg.train, epochs=epochs, export=export
        )
    return {b: root / b for b in PAPER_RUNS}


@pytest.mark.training
@pytest.mark.parametrize("backbone", list(PAPER_RUNS))
def test_paper_backbone_trains_from_scratch_and_writes_everything(
    backbone: str, paper_models: dict[str, Path]
) -> None:
    from fauna.model.artifact import load_model
    from fauna.step_output import read_marker

    out = paper_models[backbone]
    assert read_marker(out)["step"] == "train"
    for name in ("model.keras", "classes.json", "preprocess.json", "source.json", "augment.json"):
        assert (out / name).is_file(), name
    for name in ("history.json", "history.csv", "history.png", "train_info.json"):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "history.png") as png:
        assert png.format == "PNG" and png.size[0] > 500

    epochs, export = PAPER_RUNS[backbone]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert {h["phase"] for h in history} == {"scratch"}  # weights none: one phase, all layers
    for entry in history:
        for metric in METRICS:
            for key in (metric, f"val_{metric}"):
                assert np.isfinite(entry[key]), key
                if metric != "loss":
                    assert 0.0 <= entry[key] <= 1.0, key
        assert entry["lr"] > 0 and entry["train_seconds"] > 0 and entry["images"] == 18

    info = json.loads((out / "train_info.json").read_text())
    assert info["backbone"] == backbone and info["weights"] == "none"
    assert info["image_size"] == PAPER_SIZE and info["epochs_run"] == epochs
    assert info["train_seconds"] > 0 and info["images_per_second"] > 0
    assert info["params"] >= info["trainable_params"] > 0.9 * info["params"]  # all layers
    assert info["config"]["batch_size"] == 4 and info["config"]["dense_units"] == [16]
    assert info["settings"]["augment"]["rotation"] == 0.05 and info["synthetic"] is True
    assert info["recipe"]["start"] == "scratch"
    # BatchNorm statistics (VGG: only the head's) recomputed on all ceil(18 / 4) train batches
    assert info["recipe"]["batchnorm_recalibrated_batches"] == 5
    assert info["recipe"]["normalize_features"] is True
    # The checkpoints went with success; nothing but the model folder is left.
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []
    assert (out / "export" / "1" / "saved_model.pb").is_file() == export

    model = load_model(out)
    assert model.input_shape == (None, PAPER_SIZE, PAPER_SIZE, 3)
    assert model.get_layer("embedding").units == 16
    pixels = np.random.default_rng(1).uniform(0, 255, (2, PAPER_SIZE, PAPER_SIZE, 3))
    probs = np.asarray(model(pixels.astype("float32"), training=False))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.training
def test_model_keras_loads_with_plain_keras_and_matches_the_export(
    paper_models: dict[str, Path], tmp_path: Path
) -> None:
    """No `import fauna` needed to load model.keras; export/1 serves the same predictions."""
    import tensorflow as tf

    from fauna.model.artifact import load_model

    out = paper_models["vgg16"]
    pixels = np.random.default_rng(2).uniform(0, 255, (3, PAPER_SIZE, PAPER_SIZE, 3))
    np.save(tmp_path / "pixels.npy", pixels.astype("float32"))
    script = (
        "import sys, numpy as np, keras\n"
        f"model = keras.saving.load_model({str(out / 'model.keras')!r})\n"
        f"probs = model(np.load({str(tmp_path / 'pixels.npy')!r}), training=False)\n"
        f"np.save({str(tmp_path / 'plain.npy')!r}, np.asarray(probs))\n"
        "print('FAUNA', [m for m in sys.modules if m.startswith('fauna')])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "FAUNA []" in done.stdout
    plain = np.load(tmp_path / "plain.npy")
    from_keras = np.asarray(load_model(out)(pixels.astype("float32"), training=False))
    served = tf.saved_model.load(str(out / "export" / "1"))
    from_export = np.asarray(served.serve(tf.constant(pixels.astype("float32"))))
    np.testing.assert_allclose(plain, from_keras, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(from_export, from_keras, rtol=1e-4, atol=1e-5)


@pytest.mark.training
def test_rerun_of_a_finished_training_returns_it(
    paper_models: dict[str, Path], paper_data: Path
) -> None:
    from fauna.steps.train import train_backbone

    out = paper_models["resnet50"]
    saved_at = (out / "model.keras").stat().st_mtime_ns
    history = json.loads((out / "history.json").read_text())
    result = train_backbone(paper_data, out, "resnet50", tiny_config().train, epochs=1)
    assert result.history == history and result.epochs_run == 1
    assert (out / "model.keras").stat().st_mtime_ns == saved_at  # not trained again


@pytest.mark.training
def test_component_wraps_the_step_and_sets_metadata(
    paper_models: dict[str, Path], paper_data: Path
) -> None:
    """The KFP wrapper on the finished resnet50 folder (a retried task): metadata only."""
    from kfp import dsl

    from fauna.components.train import train
    from fauna.knobs import TRAIN_KNOBS

    cfg = tiny_config()
    model = dsl.Model(uri=str(paper_models["resnet50"]))
    train.python_func(
        backbone="resnet50",
        epochs=1,
        train_config=cfg.to_dict()["train"],
        **{knob.name: knob.default_in(cfg) for knob in TRAIN_KNOBS},  # the run parameters
        run_id="run-1",
        checkpoint_root="",
        data=dsl.Dataset(uri=str(paper_data)),
        model=model,
    )
    assert model.metadata["backbone"] == "resnet50" and model.metadata["epochs_run"] == 1
    assert 0 <= model.metadata["val_accuracy"] <= 1 and model.metadata["images_per_second"] > 0


@pytest.mark.training
def test_two_phases_from_pretrained_weights(tmp_path: Path) -> None:
    """A weights file stands in for ImageNet: head (backbone frozen), then fine-tuning with
    BatchNorm frozen; the statistics it came with are kept."""
    from fauna.model.artifact import load_model
    from fauna.model.backbones import get_backbone
    from fauna.steps.train import train_backbone

    data = make_split_dataset(tmp_path / "data", size=32)
    base = get_backbone("mobilenetv2").build(32, "none")
    weights = tmp_path / "mobilenetv2.weights.h5"
    base.save_weights(weights)
    cfg = tiny_config(weights=str(weights), fine_tune_layers=12).train
    out = tmp_path / "model"
    train_backbone(data, out, "mobilenetv2", cfg, epochs=2, export=False)

    history = json.loads((out / "history.json").read_text())
    assert [h["phase"] for h in history] == ["head", "fine_tune"]
    info = json.loads((out / "train_info.json").read_text())
    assert info["recipe"]["start"] == "pretrained"
    assert info["recipe"]["batchnorm_recalibrated_batches"] == 0
    model = load_model(out)
    trained = model.get_layer("backbone")
    batchnorms = [layer for layer in trained.layers if "BatchNormalization" in type(layer).__name__]
    assert batchnorms and not any(layer.trainable for layer in batchnorms)
    for before, after in zip(base.layers, trained.layers, strict=True):
        if "BatchNormalization" in type(before).__name__:  # moving statistics untouched
            for a, b in zip(before.get_weights(), after.get_weights(), strict=True):
                np.testing.assert_array_equal(a, b)


@pytest.mark.training
def test_checkpoint_of_another_run_is_refused(paper_data: Path, tmp_path: Path) -> None:
    from fauna.steps.train import train_backbone
    from fauna.training import TrainError

    cfg = tiny_config().train
    with pytest.raises(Preempted):
        train_backbone(
            paper_data, tmp_path / "m", "mobilenetv3small", cfg, epochs=2,
            extra_callbacks=[kill_after(1)], export=False,
        )  # fmt: skip
    other = tiny_config(dropout=0.1).train
    with pytest.raises(TrainError, match="checkpoint of a different training run"):
        train_backbone(paper_data, tmp_path / "m", "mobilenetv3small", other, epochs=2)


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    data = make_split_dataset(tmp_path / "data", size=32, per_class={"train": 1})

    def error(*args: str) -> str:
        code = main(["train", "--data", str(data), "--out", str(tmp_path / "x"), *args])
        err = capsys.readouterr().err.strip()
        assert code == 2 and "\n" not in err, err
        return err

    assert "unknown backbone 'alexnet'" in error("--backbone", "alexnet")
    assert "at least 75 px, got 32" in error("--backbone", "InceptionV3")
    assert "unknown backbone(s) in train.overrides: 'resnet5'" in error(
        "--backbone", "vgg16", "--set", "train.overrides.resnet5.batch_size=8"
    )
    assert "--epochs must be at least 1, got 0" in error("--backbone", "vgg16", "--epochs", "0")
    code = main(
        ["train", "--data", str(tmp_path), "--backbone", "vgg16", "--out", str(tmp_path / "y")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not a completed step output" in err and "fauna split" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


# ------------------------------------------------------- learnability (+ local resume)


# Slow tier: a learning test (~3 min on a loaded 2-core VM); test_learnability.py is its kin.
@pytest.mark.slow
@pytest.mark.training
def test_learns_separable_classes_through_a_mid_run_resume(
    tmp_path: Path, deterministic_ops: None
) -> None:
    """>= 0.85 test accuracy from scratch: labels, splits, metrics and resume are wired right.

    Killed after epoch 4 of 8 and run again, it continues at epoch 5 with the
    checkpointed weights, optimizer state and schedule. Measured (docs/training.md):
    0.95-0.975 with oneDNN on and off; with 25 images per class it was 0.80-0.90 and
    failed on AMD EPYC (0.825), so 40 per class, and a threshold below the spread.
    """
    from fauna.model.artifact import load_model
    from fauna.steps.train import train_backbone

    classes, size = 4, 32
    data = make_split_dataset(
        tmp_path / "data", classes, {"train": 40, "val": 5, "test": 10}, size=size, seed=1
    )
    cfg = tiny_config(batch_size=8, dense_units=[32], dropout=0.2).train
    out = tmp_path / "model"
    with pytest.raises(Preempted):
        train_backbone(
            data, out, "mobilenetv3small", cfg, epochs=8,
            extra_callbacks=[kill_after(4)], export=False,
        )  # fmt: skip
    assert not out.exists()  # no half-written model folder
    train_backbone(data, out, "mobilenetv3small", cfg, epochs=8, export=False)

    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(8))
    runs = [h["run_id"] for h in history]
    assert len(set(runs[:4])) == 1 and len(set(runs[4:])) == 1 and runs[4] != runs[0]
    lrs = [h["lr"] for h in history]
    assert lrs[4] < lrs[3] and lrs[-1] < lrs[4]  # the cosine went on where it stopped

    accuracy = top1_on_test_split(load_model(out), data, size, classes)
    curve = [round(h["val_accuracy"], 2) for h in history]
    print(f"\nmobilenetv3small resume: test top-1 {accuracy:.3f}, validation {curve}")
    assert accuracy >= 0.85, f"test accuracy {accuracy:.2f}, validation {curve}"


def test_generated_classes_keep_their_hue_and_pattern_through_the_crop() -> None:
    """The smoke run's sample: each class a hue and a pattern, visible in the 80 px crop."""
    import colorsys
    import random

    from fauna.data.imaging import transform
    from fauna.data.synthetic import PATTERNS

    classes, rng = 30, random.Random(5)
    hues = []
    for index in range(classes):
        image = class_image(index, classes, (rng.randint(96, 144), rng.randint(130, 190)), rng)
        crop = np.asarray(transform(image, 80, "crop"), dtype=np.float32) / 255
        hsv = np.array([colorsys.rgb_to_hsv(*p) for p in crop.reshape(-1, 3)])
        foreground = hsv[:, 1] > 0.6  # the pattern's saturated colour, not the grey background
        assert 0.15 < foreground.mean() < 0.85, (index, foreground.mean())  # a pattern, not a fill
        angles = hsv[foreground, 0] * 2 * np.pi
        hue = np.angle(np.mean(np.exp(1j * angles))) / (2 * np.pi) % 1.0
        hues.append(hue)

    def apart(a: float, b: float) -> float:
        return min(abs(a - b), 1 - abs(a - b))

    for i in range(classes):
        assert apart(hues[i], i / classes) < 0.015, (i, hues[i])
        for j in range(i + 1, classes):
            same_pattern = i % len(PATTERNS) == j % len(PATTERNS)
            assert apart(hues[i], hues[j]) > (0.15 if same_pattern else 0.015), (i, j)


@pytest.mark.training
@pytest.mark.parametrize("name", ["ResumableEarlyStopping", "ResumableReduceLROnPlateau"])
def test_callback_counters_survive_a_checkpoint_round_trip(name: str) -> None:
    """What state() writes into state.json, a new callback restores at train begin."""
    import keras

    from fauna.training import callbacks

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    cls = getattr(callbacks, name)
    before = cls(monitor="loss", patience=3)
    before.set_model(model)
    before.on_train_begin()
    values = {"wait": 2, "best": 0.25, "best_epoch": 4, "cooldown_counter": 1}
    for counter in cls.COUNTERS:
        setattr(before, counter, values[counter])
    saved = json.loads(json.dumps(before.state()))
    assert saved == {counter: values[counter] for counter in cls.COUNTERS}
    after = cls(monitor="loss", patience=3, resume=saved)
    after.set_model(model)
    after.on_train_begin()  # Keras resets its counters here; the saved ones come back
    assert after.state() == saved
    fresh = cls(monitor="loss", patience=3)
    fresh.set_model(model)
    fresh.on_train_begin()
    assert fresh.state() != saved


# ------------------------------------------------------------ divergence, named


@pytest.mark.training
def test_a_huge_learning_rate_stops_with_one_line_and_leaves_nothing(
    tmp_path: Path, capsys
) -> None:
    """lr 1000 from scratch: one line naming the epoch, the step and the setting, exit 2,
    no model folder and no checkpoints (a rerun with a lower rate starts afresh)."""
    from fauna.cli import main

    data = make_split_dataset(tmp_path / "data", size=32)
    out = tmp_path / "model"
    args = ["train", "--data", str(data), "--backbone", "mobilenetv3small", "--out", str(out)]
    settings = ["--set", "train.weights=none", "--set", "train.batch_size=4"]
    settings += ["--set", "train.scratch_learning_rate=1000", "--epochs", "3"]
    code = main([*args, *settings])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    last = err[-1]
    print(f"\n{last}")
    assert re.fullmatch(
        r"fauna train: error: diverged at (epoch \d, step \d+: loss|the end of epoch \d: \S+"
        r"|after epoch \d: .+) is (NaN|inf|not finite) — lower the learning rate "
        r"\(train\.scratch_learning_rate=1000\)",
        last,
    ), last
    assert not any("Traceback" in line for line in err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no model, no checkpoints


# ----------------------------------------------- settings precedence, offline weights


def test_a_general_setting_applies_to_every_backbone_unless_set_for_one() -> None:
    """`--set train.X` beats params.yaml's per-backbone X; `train.overrides.<b>.X` set by the
    user too still wins for that backbone; a profile's general setting beats the defaults'."""
    from fauna.config import load_config

    cfg = load_config(overrides={"train.batch_size": 16, "train.learning_rate": 5e-4}).train
    resnet = cfg.for_backbone("resnet50")
    assert (resnet.batch_size, resnet.learning_rate) == (16, 5e-4)  # params.yaml: 32, 1e-3
    assert cfg.for_backbone("inceptionv3").batch_size == 16
    assert resnet.fine_tune_epochs == 40 and resnet.dropout == 0.2  # the other paper settings
    both = {"train.batch_size": 16, "train.overrides.ResNet50.batch_size": 8}
    cfg = load_config(overrides=both).train
    assert (
        cfg.for_backbone("resnet50").batch_size == 8 and cfg.for_backbone("vgg16").batch_size == 16
    )
    smoke = load_config(profile="smoke", overrides={"train.scratch_learning_rate": 3e-3}).train
    assert smoke.for_backbone("vgg16").scratch_learning_rate == 3e-3  # default override: 1e-4
    assert load_config(profile="smoke").train.for_backbone("vgg16").scratch_learning_rate == 1e-4


@pytest.mark.training
def test_a_general_set_trains_a_backbone_whose_earlier_layer_set_its_own(
    tmp_path: Path, capsys
) -> None:
    """The `fauna --help` example (`--set train.batch_size=…` with resnet50, issue 17) on a
    cheaper backbone: a config file gives it its own batch size, as params.yaml does for
    resnet50; the general `--set` is used, and train's first line says so."""
    from fauna.cli import main

    data = make_split_dataset(tmp_path / "data", size=32, per_class={"train": 3, "val": 1})
    config = tmp_path / "params.yaml"
    config.write_text("train:\n  overrides:\n    mobilenetv3small: {batch_size: 3, dropout: 0.3}\n")
    out = tmp_path / "model"
    args = ["train", "--data", str(data), "--backbone", "mobilenetv3small", "--out", str(out)]
    sets = ["--set", "train.batch_size=6", "--set", "train.weights=none", "--epochs", "1"]
    assert main([*args, "--config", str(config), *sets]) == 0
    info = json.loads((out / "train_info.json").read_text())
    assert (info["config"]["batch_size"], info["config"]["dropout"]) == (6, 0.3)
    lines = capsys.readouterr().err.splitlines()
    [line] = [x for x in lines if "mobilenetv3small settings:" in x]
    assert " batch_size=6 " in line and " dropout=0.3* " in line and " weights=none " in line
    assert line.endswith("(* from train.overrides.mobilenetv3small)")


def test_imagenet_weights_offline_are_one_line(tmp_path: Path) -> None:
    """No internet (every download goes to a closed local port): exit 2, one line, the
    way out named, nothing left behind. A subprocess: Keras reads KERAS_HOME at import."""
    import os

    data = make_split_dataset(tmp_path / "data", size=32, per_class={"train": 2})
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("no_proxy",)}
    closed = "http://127.0.0.1:9"
    env.update(HTTPS_PROXY=closed, HTTP_PROXY=closed, https_proxy=closed, http_proxy=closed)
    env.update(KERAS_HOME=str(tmp_path / "keras"), FAUNA_CACHE_DIR=str(tmp_path / "cache"))
    out = tmp_path / "model"
    done = subprocess.run(
        [sys.executable, "-m", "fauna.cli", "train", "--data", str(data), "--backbone",
         "ResNet50", "--out", str(out), "--set", "train.weights=imagenet", "--epochs", "1"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "fauna train: error: cannot download ImageNet weights for resnet50 (no internet?): "
        "use --set train.weights=none, a weights file or an s3:// URI"
    )
    assert "Traceback" not in done.stderr
    assert (
        sorted(p.name for p in tmp_path.iterdir()) == ["cache", "data", "keras"] or not out.exists()
    )
