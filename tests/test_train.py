"""train: the three paper backbones end to end, resume after a kill, learnability.

Real Keras models (weights=none: nothing here can download ImageNet) on tiny
generated split datasets in the fauna.records format. Training outputs are shared
through module-scoped fixtures to keep the suite fast on 2 cores.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fauna.config import Config
from fauna.records import Record, ShardWriter
from fauna.synthetic import class_image

PAPER_SIZE = 75  # InceptionV3's minimum
METRICS = ("loss", "accuracy", "top3_accuracy", "auc", "macro_f1")
# The augment step's augment.json shape (layer settings nested), train-time augmentation on.
AUGMENT_JSON = {
    "mode": "augment",
    "train_time_augmentation": True,
    "layers": {"horizontal_flip": True, "rotation": 0.05, "zoom": 0.05, "translation": 0.05},
    "settings": {"mode": "augment", "contrast": 0.1, "seed": 7},
}


def make_split_dataset(
    root: Path,
    num_classes: int = 3,
    per_class: dict[str, int] | None = None,
    size: int = PAPER_SIZE,
    seed: int = 0,
    augment: dict | None = None,
) -> Path:
    """A split dataset folder: {train,val,test}/part-*.tfrecord + the JSON files beside them."""
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
        (root / "augment.json").write_text(json.dumps(augment))
    return root


def tiny_config(**train: object) -> Config:
    """weights=none, batch 4, a 16-unit head; per-backbone overrides neutralised."""
    settings = {
        "weights": "none",
        "batch_size": 4,
        "dense_units": [16],
        "mixed_precision": False,
        "overrides": {
            "resnet50": {"batch_size": 4, "learning_rate": 1e-3},
            "inceptionv3": {"batch_size": 4, "decay": 1e-4},  # exercises the decay callback
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


# ------------------------------------------------------------------ fast unit tests


def test_registry_names_sizes_and_preprocessing() -> None:
    from fauna.backbones import BackboneError, check_input_size, get_backbone

    assert get_backbone("VGG16").name == "vgg16"
    assert get_backbone("ResNet50").module == "keras.applications.resnet"
    assert get_backbone("inceptionv3").min_input_size == 75
    assert get_backbone("resnet50").min_input_size == 32
    assert get_backbone("EfficientNetV2B0").builtin_preprocessing
    assert get_backbone("convnexttiny").builtin_preprocessing
    assert not get_backbone("mobilenetv2").builtin_preprocessing
    with pytest.raises(BackboneError, match="unknown backbone 'alexnet'.*vgg16.*mobilenetv2"):
        get_backbone("alexnet")
    with pytest.raises(BackboneError, match="at least 75 px, got 74"):
        check_input_size(get_backbone("inceptionv3"), 74)
    # The module's own preprocess_input: VGG is caffe-style (BGR, mean-centred).
    pixels = np.full((1, 2, 2, 3), 100.0, dtype=np.float32)
    out = get_backbone("vgg16").preprocess_input(pixels.copy())
    np.testing.assert_allclose(out[0, 0, 0], [100 - 103.939, 100 - 116.779, 100 - 123.68], 1e-4)


def test_weights_from_a_file_and_from_s3(s3: str, tmp_path: Path, monkeypatch) -> None:
    from fauna import storage
    from fauna.backbones import BackboneError, get_backbone, resolve_weights

    monkeypatch.setenv("FAUNA_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_weights("none") is None and resolve_weights("imagenet") == "imagenet"
    with pytest.raises(BackboneError, match="weights file not found"):
        resolve_weights(str(tmp_path / "missing.weights.h5"))
    spec = get_backbone("mobilenetv2")
    source = spec.build(32, "none")
    weights = tmp_path / "mobilenetv2_notop.weights.h5"
    source.save_weights(weights)
    storage.upload_file(weights, f"s3://{s3}/weights/{weights.name}")

    for location in (str(weights), f"s3://{s3}/weights/{weights.name}"):
        loaded = spec.build(32, location)
        for a, b in zip(source.get_weights(), loaded.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)


def test_model_layers_and_trainable_phases() -> None:
    import keras

    from fauna.config import BackboneTrainConfig
    from fauna.model import BackbonePreprocessing, build_model, set_trainable

    cfg = BackboneTrainConfig(dense_units=[8, 4], l1=1e-4, l2=1e-4)
    model = build_model("mobilenetv2", 32, 5, cfg, "none")
    names = [layer.name for layer in model.layers]
    assert names[1] == "preprocess" and names[-1] == "predictions"
    assert model.get_layer("embedding").units == 4
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    base = model.get_layer("backbone")
    assert not base.trainable  # phase 1: head only

    set_trainable(model, 10, freeze_batchnorm=True)
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(layer in base.layers[-10:] for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    set_trainable(model, -1, freeze_batchnorm=False)
    assert all(layer.trainable for layer in base.layers[1:])  # all but the input

    pre = BackbonePreprocessing.from_config(model.get_layer("preprocess").get_config())
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    expected = keras.applications.mobilenet_v2.preprocess_input(x.copy())
    np.testing.assert_allclose(np.asarray(pre(x)), expected, rtol=1e-5, atol=1e-5)


def test_epochs_split_and_class_weights() -> None:
    from fauna.config import BackboneTrainConfig
    from fauna.steps.train import TrainError, balanced_class_weights, with_total_epochs

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


def test_augment_json_is_read_as_written_by_the_augment_step(tmp_path: Path) -> None:
    from fauna.steps.train import augment_settings

    assert augment_settings(tmp_path) is None  # no augment.json: no augmentation
    (tmp_path / "augment.json").write_text(json.dumps(AUGMENT_JSON))
    aug = augment_settings(tmp_path)
    assert (aug.rotation, aug.contrast, aug.seed, aug.horizontal_flip) == (0.05, 0.1, 7, True)
    off = {**AUGMENT_JSON, "mode": "none", "train_time_augmentation": False}
    (tmp_path / "augment.json").write_text(json.dumps(off))
    assert augment_settings(tmp_path) is None


# ------------------------------------------------- the paper's backbones, end to end

# vgg16 runs both phases and the serving export; the others the head phase only (time).
PAPER_RUNS = {"vgg16": (2, True), "resnet50": (1, False), "inceptionv3": (1, False)}


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_split_dataset(tmp_path_factory.mktemp("paper-data"), augment=AUGMENT_JSON)


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


@pytest.mark.parametrize("backbone", list(PAPER_RUNS))
def test_paper_backbone_trains_and_writes_everything(
    backbone: str, paper_models: dict[str, Path], paper_data: Path
) -> None:
    from fauna.model import load_model

    out = paper_models[backbone]
    for name in ("model.keras", "classes.json", "preprocess.json", "source.json", "augment.json"):
        assert (out / name).is_file(), name
    for name in ("history.json", "history.csv", "history.png", "train_info.json"):
        assert (out / name).stat().st_size > 0, name
    with Image.open(out / "history.png") as png:
        assert png.format == "PNG" and png.size[0] > 500

    epochs, export = PAPER_RUNS[backbone]
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(epochs))
    assert [h["phase"] for h in history] == ["head", "fine_tune"][:epochs]
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
    assert info["params"] > info["trainable_params"] > 0 or epochs == 2
    assert info["config"]["batch_size"] == 4 and info["config"]["dense_units"] == [16]
    assert info["settings"]["augment"]["rotation"] == 0.05 and info["synthetic"] is True
    # Only the small state file stays behind once training succeeded.
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["state.json"]
    assert (out / "export" / "1" / "saved_model.pb").is_file() == export

    model = load_model(str(out / "model.keras"))
    assert model.input_shape == (None, PAPER_SIZE, PAPER_SIZE, 3)
    assert model.get_layer("embedding").units == 16
    pixels = np.random.default_rng(1).uniform(0, 255, (2, PAPER_SIZE, PAPER_SIZE, 3))
    probs = np.asarray(model(pixels.astype("float32"), training=False))
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_serving_export_matches_the_keras_model(paper_models: dict[str, Path]) -> None:
    import tensorflow as tf

    from fauna.model import load_model

    out = paper_models["vgg16"]
    pixels = np.random.default_rng(2).uniform(0, 255, (3, PAPER_SIZE, PAPER_SIZE, 3))
    pixels = pixels.astype("float32")
    served = tf.saved_model.load(str(out / "export" / "1"))
    from_export = np.asarray(served.serve(tf.constant(pixels)))
    from_keras = np.asarray(load_model(str(out / "model.keras"))(pixels, training=False))
    np.testing.assert_allclose(from_export, from_keras, rtol=1e-4, atol=1e-5)


def test_rerun_of_a_finished_training_returns_it(
    paper_models: dict[str, Path], paper_data: Path
) -> None:
    from fauna.steps.train import train_backbone

    out = paper_models["resnet50"]
    before = json.loads((out / "history.json").read_text())
    result = train_backbone(paper_data, out, "resnet50", tiny_config().train, epochs=1)
    assert result.history == before and result.epochs_run == 1


def test_component_wraps_the_step_and_sets_metadata(
    paper_models: dict[str, Path], paper_data: Path
) -> None:
    """The KFP wrapper on the finished resnet50 folder (a retried task): metadata only."""
    from kfp import dsl

    from fauna.components.train import train

    config = tiny_config(head_epochs=1, fine_tune_epochs=0)
    model = dsl.Model(uri=str(paper_models["resnet50"]))
    train.python_func(
        config_json=json.dumps(config.to_dict()),
        backbone="resnet50",
        data=dsl.Dataset(uri=str(paper_data)),
        model=model,
    )
    assert model.metadata["backbone"] == "resnet50" and model.metadata["epochs_run"] == 1
    assert 0 <= model.metadata["val_accuracy"] <= 1 and model.metadata["images_per_second"] > 0


def test_checkpoint_of_another_run_is_refused(paper_data: Path, tmp_path: Path) -> None:
    from fauna.steps.train import TrainError, train_backbone

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "state.json").write_text(json.dumps({"fingerprint": "other"}))
    with pytest.raises(TrainError, match="different training run"):
        train_backbone(paper_data, tmp_path, "vgg16", tiny_config().train, epochs=1)


def test_cli_errors_are_one_line(paper_data: Path, tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    code = main(
        ["train", "--data", str(paper_data), "--backbone", "alexnet", "--out", str(tmp_path / "x")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "unknown backbone 'alexnet'" in err and "\n" not in err
    small = make_split_dataset(tmp_path / "small", size=32, per_class={"train": 1})
    code = main(
        ["train", "--data", str(small), "--backbone", "InceptionV3", "--out", str(tmp_path / "y")]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and "at least 75 px, got 32" in err


# ---------------------------------------------------------------------------- resume


def test_killed_training_resumes_from_s3_on_a_fresh_machine(s3: str, tmp_path: Path) -> None:
    """A preempted pod: its folder is gone, the S3 checkpoint is not; epoch 2 of 2 runs."""
    from fauna.model import load_model
    from fauna.steps.train import train_backbone

    data = make_split_dataset(tmp_path / "data", size=32)
    cfg = tiny_config(head_epochs=1, fine_tune_epochs=1).train
    checkpoints = f"s3://{s3}/checkpoints/run-1/vgg16"
    first, second = tmp_path / "pod-1", tmp_path / "pod-2"
    with pytest.raises(Preempted):
        train_backbone(
            data, first, "vgg16", cfg, checkpoint_uri=checkpoints,
            extra_callbacks=[kill_after(1)], export=False,
        )  # fmt: skip
    killed = json.loads((first / "history.json").read_text())
    assert [h["epoch"] for h in killed] == [0]

    result = train_backbone(data, second, "vgg16", cfg, checkpoint_uri=checkpoints, export=False)
    history = json.loads((second / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert [h["phase"] for h in history] == ["head", "fine_tune"]
    assert history[0] == killed[0]  # epoch 1 came from the first pod, untouched
    assert history[1]["run_id"] != history[0]["run_id"]  # the second pod ran only epoch 2
    assert result.runs == 2 and result.epochs_run == 2
    assert (second / "model.keras").is_file()

    # Retried after success (say its outputs failed to upload): rebuilt, not retrained.
    third = tmp_path / "pod-3"
    train_backbone(data, third, "vgg16", cfg, checkpoint_uri=checkpoints, export=False)
    assert json.loads((third / "history.json").read_text()) == history
    assert (third / "train_info.json").is_file()
    for a, b in zip(
        load_model(str(second / "model.keras")).get_weights(),
        load_model(str(third / "model.keras")).get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


# ------------------------------------------------------- learnability (+ local resume)


def test_learns_separable_classes_through_a_mid_phase_resume(tmp_path: Path) -> None:
    """>= 0.9 test accuracy from scratch: labels, splits, metrics and resume are wired right.

    Killed after epoch 3 of 6 (mid fine-tuning) and re-run in the same folder, it
    continues at epoch 4 with the checkpointed weights and optimizer state.
    """
    from fauna.inputs import make_dataset
    from fauna.model import load_model
    from fauna.steps.train import train_backbone

    classes, size = 4, 32
    data = make_split_dataset(
        tmp_path / "data", classes, {"train": 25, "val": 5, "test": 10}, size=size, seed=1
    )
    cfg = tiny_config(
        head_epochs=1,
        fine_tune_epochs=5,
        batch_size=8,
        learning_rate=1e-3,
        fine_tune_learning_rate=1e-4,
        fine_tune_layers=-1,
        dense_units=[32],
        dropout=0.2,
    ).train
    out = tmp_path / "model"
    with pytest.raises(Preempted):
        train_backbone(data, out, "vgg16", cfg, extra_callbacks=[kill_after(3)], export=False)
    train_backbone(data, out, "vgg16", cfg, export=False)

    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3, 4, 5]
    assert [h["phase"] for h in history] == ["head"] + ["fine_tune"] * 5
    runs = [h["run_id"] for h in history]
    assert len(set(runs[:3])) == 1 and len(set(runs[3:])) == 1 and runs[3] != runs[0]

    model = load_model(str(out / "model.keras"))
    correct = total = 0
    for images, labels in make_dataset(data / "test", size, classes, 16):
        predicted = np.argmax(model(images, training=False), axis=1)
        correct += int(np.sum(predicted == np.argmax(labels, axis=1)))
        total += len(predicted)
    assert total == 40
    curve = [round(h["val_accuracy"], 2) for h in history]
    assert correct / total >= 0.9, f"test accuracy {correct / total:.2f}, validation {curve}"
