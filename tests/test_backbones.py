"""The backbone registry: names, sizes, preprocessing as standard layers, every model trains.

The last test builds every registered keras.applications model at its minimum input
size and runs one training step on it (EfficientNetV2 used to fail with
`KeyError: 'backbone'` before its first step).
"""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pytest


def test_registry_names_sizes_and_families() -> None:
    from fauna.model.backbones import PAPER_BACKBONES, BackboneError, check_input_size, get_backbone

    assert get_backbone("VGG16").name == "vgg16"
    assert get_backbone("ResNet50").module.rsplit(".", 1)[-1] == "resnet"
    assert get_backbone("efficientnet_v2_b0").module.rsplit(".", 1)[-1] == "efficientnet_v2"
    assert get_backbone("inceptionv3").min_input_size == 75
    assert get_backbone("resnet50").min_input_size == 32
    assert [get_backbone(b).preprocessing for b in PAPER_BACKBONES] == ["caffe", "caffe", "tf"]
    assert get_backbone("densenet121").preprocessing == "torch"
    assert get_backbone("EfficientNetV2B0").preprocessing == "builtin"
    with pytest.raises(BackboneError, match="unknown backbone 'alexnet'.*vgg16.*mobilenetv2"):
        get_backbone("alexnet")
    with pytest.raises(BackboneError, match="at least 75 px, got 74"):
        check_input_size(get_backbone("inceptionv3"), 74)


def test_every_registered_module_has_a_known_preprocessing() -> None:
    from fauna.model.backbones import registry

    unknown = sorted({b.module for b in registry().values() if not b.preprocessing})
    assert unknown == [], f"add these to fauna.model.backbones.PREPROCESSING: {unknown}"


def test_unknown_names_are_refused_where_training_starts() -> None:
    from fauna.model.backbones import BackboneError, check_names

    check_names(["ResNet50", "efficientnet-v2-b0"], "train.overrides")
    with pytest.raises(BackboneError) as caught:
        check_names(["resnet50", "resnet5", "vgg"], "train.overrides")
    assert "unknown backbone(s) in train.overrides: 'resnet5', 'vgg'" in str(caught.value)


def test_preprocessing_layers_equal_each_modules_preprocess_input() -> None:
    """Standard Keras layers reproduce every family's `preprocess_input` on raw pixels."""
    from fauna.model.backbones import registry
    from fauna.model.network import preprocessing_layer

    pixels = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    checked = set()
    for spec in registry().values():
        if spec.module in checked:
            continue
        checked.add(spec.module)
        expected = np.asarray(spec.preprocess_input(pixels.copy()))
        got = np.asarray(preprocessing_layer(spec)(pixels))
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4, err_msg=spec.module)
    assert len(checked) >= 14


def test_weights_from_a_file_and_from_s3(s3: str, tmp_path: Path, monkeypatch) -> None:
    from fauna.model.backbones import BackboneError, get_backbone, resolve_weights
    from fauna.store import storage

    monkeypatch.setenv("FAUNA_CACHE_DIR", str(tmp_path / "cache"))
    assert resolve_weights("none") is None and resolve_weights("imagenet") == "imagenet"
    with pytest.raises(BackboneError, match="weights file not found"):
        resolve_weights(str(tmp_path / "missing.weights.h5"))
    spec = get_backbone("mobilenetv2")
    source = spec.build(32, "none")
    assert source.name == "backbone"
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
    from fauna.model.network import build_model, limit_batchnorm_momentum, set_trainable

    cfg = BackboneTrainConfig(dense_units=[8, 4], l1=1e-4, l2=1e-4)
    model = build_model("mobilenetv2", 32, 5, cfg, "none")
    names = [layer.name for layer in model.layers]
    assert names[1:3] == ["preprocess", "backbone"] and names[-1] == "predictions"
    assert model.get_layer("embedding").units == 4
    assert model.get_layer("predictions").dtype_policy.compute_dtype == "float32"
    base = model.get_layer("backbone")
    assert not base.trainable  # built frozen; the recipe unfreezes what it trains

    set_trainable(model, 10, freeze_batchnorm=True)
    trainable = [layer for layer in base.layers if layer.trainable and layer.weights]
    assert trainable and all(layer in base.layers[-10:] for layer in trainable)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in trainable)
    set_trainable(model, -1, freeze_batchnorm=False)
    assert all(layer.trainable for layer in base.layers[1:])  # all but the input

    batchnorms = [layer for layer in base.layers if "BatchNormalization" in type(layer).__name__]
    assert limit_batchnorm_momentum(model, 0.9) == len(batchnorms) > 0
    assert {layer.momentum for layer in batchnorms} == {0.9}


@pytest.mark.training
def test_recalibrated_batchnorm_statistics_are_the_training_data_averages() -> None:
    """After recalibration, inference-mode BatchNorm sees what training-mode saw."""
    import keras

    from fauna.model.network import recalibrate_batchnorm

    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(4, name="d")(inputs)
    norm = keras.layers.BatchNormalization(momentum=0.999, name="bn")
    base = keras.Model(inputs, norm(hidden), name="backbone")
    model = keras.Model(inputs, base(inputs))
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, (16, 4)).astype("float32") for _ in range(5)]
    assert recalibrate_batchnorm(model, ((b, None) for b in batches)) == 5
    dense = base.get_layer("d")
    features = [np.asarray(dense(b)) for b in batches]
    np.testing.assert_allclose(
        np.asarray(norm.moving_mean), np.mean([f.mean(0) for f in features], 0), rtol=1e-4
    )
    np.testing.assert_allclose(
        np.asarray(norm.moving_variance), np.mean([f.var(0) for f in features], 0), rtol=1e-3
    )
    assert norm.momentum == 0.999  # put back


def _all_backbones() -> list[str]:
    from fauna.model.backbones import registry

    return sorted(registry())


# The largest models take most of this test's memory (up to 8 GB): the slow tier runs them.
LARGE = {
    "convnextbase",
    "convnextlarge",
    "convnextxlarge",
    "efficientnetb5",
    "efficientnetb6",
    "efficientnetb7",
    "efficientnetv2l",
    "efficientnetv2m",
    "nasnetlarge",
}


@pytest.mark.training
@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n for n in _all_backbones()],
)
def test_every_backbone_builds_and_trains_one_step_at_its_minimum_size(name: str) -> None:
    import keras

    from fauna.config import BackboneTrainConfig
    from fauna.model.backbones import get_backbone
    from fauna.model.network import build_model
    from fauna.training.recipe import compile_for_phase, plan_recipe

    spec = get_backbone(name)
    size = spec.min_input_size
    # Batch 4: with 2 images, BatchNorm over a 1x1 feature map makes the deepest models'
    # gradients overflow float32 in Adam (EfficientNetV2-M/L at 32 px), so nothing moves.
    cfg = BackboneTrainConfig(weights="none", dense_units=[8], batch_size=4, head_epochs=1)
    keras.utils.set_random_seed(0)
    model = build_model(name, size, 3, cfg, cfg.weights, normalize_features=True)
    recipe = plan_recipe(cfg, steps_per_epoch=1)
    compile_for_phase(model, recipe.phases[0], recipe)
    model.run_eagerly = True  # one step: tracing the training graph would cost 10x more
    pixels = np.random.default_rng(0).uniform(0, 255, (4, size, size, 3)).astype("float32")
    labels = np.eye(3, dtype="float32")[[0, 2, 1, 0]]
    before = [np.array(w) for w in model.get_layer("backbone").trainable_weights[:1]]
    loss = model.train_on_batch(pixels, labels, return_dict=True)["loss"]
    assert math.isfinite(loss)
    after = model.get_layer("backbone").trainable_weights[:1]
    assert not np.array_equal(before[0], np.asarray(after[0]))  # the backbone itself learns
    probabilities = np.asarray(model(pixels, training=False))
    assert probabilities.shape == (4, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)


@pytest.mark.training
def test_models_saved_with_the_old_preprocessing_layer_still_load(tmp_path: Path) -> None:
    """Champions saved before the standard layers keep loading through fauna.model.artifact."""
    import keras

    from fauna.model.artifact import load_model_file
    from fauna.model.network import LegacyBackbonePreprocessing

    inputs = keras.Input((8, 8, 3))
    x = LegacyBackbonePreprocessing("vgg16", name="preprocess")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))
    keras.Model(inputs, outputs).save(tmp_path / "old.keras")
    config = json.loads(zipfile.ZipFile(tmp_path / "old.keras").read("config.json"))
    assert config["config"]["layers"][1]["registered_name"] == "fauna>BackbonePreprocessing"
    model = load_model_file(tmp_path / "old.keras")
    pixels = np.full((1, 8, 8, 3), 100.0, dtype="float32")
    np.testing.assert_allclose(
        np.asarray(model.get_layer("preprocess")(pixels))[0, 0, 0],
        [100 - 103.939, 100 - 116.779, 100 - 123.68],
        rtol=1e-5,
    )
