"""Backbone + the paper's dense head, taking raw pixels; built from standard Keras layers only.

    image float32 [0, 255] (H, W, 3)
      -> "preprocess": the backbone module's own preprocessing as standard layers
         (Rescaling, Normalization, or a fixed 1x1 convolution for caffe's RGB->BGR
         and mean subtraction; Identity where the network preprocesses inside itself)
      -> "backbone" (keras.applications, include_top=False)
      -> GlobalAveragePooling2D
      -> Dense(ReLU, L1/L2) -> Dropout  ... one pair per `dense_units`, the last Dense
         named "embedding" (the penultimate layer t-SNE reads)
      -> Dense(num_classes, softmax, float32) named "predictions"

Because preprocessing is part of the model, `model.keras`, prediction and the serving
export all take the same raw pixels; and because every layer is a standard one,
`keras.saving.load_model("model.keras")` works without importing fauna.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from fauna.config import BackboneTrainConfig
from fauna.model.backbones import Backbone, get_backbone

PREPROCESS_LAYER = "preprocess"
BACKBONE_LAYER = "backbone"
EMBEDDING_LAYER = "embedding"
PREDICTIONS_LAYER = "predictions"

# keras.applications.imagenet_utils: the ImageNet statistics of the caffe and torch modes.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)


def preprocessing_layer(spec: Backbone) -> keras.layers.Layer:
    """The module's `preprocess_input` as one standard layer (float32, even mixed precision)."""
    common = {"name": PREPROCESS_LAYER, "dtype": "float32"}
    if spec.preprocessing == "tf":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, **common)
    if spec.preprocessing == "torch":
        mean = [255.0 * m for m in TORCH_MEAN]
        variance = [(255.0 * s) ** 2 for s in TORCH_STD]
        return keras.layers.Normalization(mean=mean, variance=variance, **common)
    if spec.preprocessing == "caffe":
        # out[c] = in[2 - c] - mean[c]: a fixed 1x1 convolution (a channel permutation).
        layer = keras.layers.Conv2D(3, 1, trainable=False, **common)
        layer.build((None, None, None, 3))
        kernel = np.zeros((1, 1, 3, 3), dtype="float32")
        for channel in range(3):
            kernel[0, 0, 2 - channel, channel] = 1.0
        layer.set_weights([kernel, -np.asarray(CAFFE_MEAN_BGR, dtype="float32")])
        return layer
    return keras.layers.Identity(**common)


def build_model(
    backbone: str,
    image_size: int,
    num_classes: int,
    cfg: BackboneTrainConfig,
    weights: str = "none",
    *,
    normalize_features: bool = False,
) -> keras.Model:
    """The classifier with its backbone frozen; the training recipe unfreezes what it trains.

    normalize_features: BatchNorm on the pooled features before a hidden head (from
    random weights). Pooled ReLU features are all >= 0, so one Adam step moves a head
    unit's input the same way for every image, by up to lr x the number of features;
    as the backbone's features drift, every unit ends below zero for all images and
    the model stops learning (ResNet50 on 30 classes: 64 of 64 units dead in 30 steps).
    """
    spec = get_backbone(backbone)
    base = spec.build(image_size, weights)
    base.trainable = False
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = preprocessing_layer(spec)(inputs)
    x = base(x)
    pooled_name = "pooled" if cfg.dense_units else EMBEDDING_LAYER
    x = keras.layers.GlobalAveragePooling2D(name=pooled_name)(x)
    if normalize_features and cfg.dense_units:
        x = keras.layers.BatchNormalization(name="pooled_norm")(x)
    regularizer = keras.regularizers.L1L2(l1=cfg.l1, l2=cfg.l2) if cfg.l1 or cfg.l2 else None
    for i, units in enumerate(cfg.dense_units):
        last = i == len(cfg.dense_units) - 1
        x = keras.layers.Dense(
            units,
            activation="relu",
            kernel_regularizer=regularizer,
            name=EMBEDDING_LAYER if last else f"dense_{i}",
        )(x)
        if cfg.dropout:
            x = keras.layers.Dropout(cfg.dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name=PREDICTIONS_LAYER
    )(x)
    return keras.Model(inputs, outputs, name=f"fauna_{spec.name}")


def set_trainable(
    model: keras.Model, fine_tune_layers: int | None, freeze_batchnorm: bool = True
) -> None:
    """None or 0: freeze the backbone (head only). N: unfreeze its top N layers (-1 = all).

    With pretrained weights BatchNorm layers stay frozen (and so in inference mode):
    small fine-tuning batches would otherwise wreck the statistics learned on ImageNet
    (the keras-io recipe). From random weights there are no statistics to protect, so
    they train. Call compile() afterwards, or nothing changes.
    """
    base = model.get_layer(BACKBONE_LAYER)
    if not fine_tune_layers:
        base.trainable = False
        return
    base.trainable = True
    layers = base.layers
    first = 0 if fine_tune_layers < 0 else max(0, len(layers) - fine_tune_layers)
    for index, layer in enumerate(layers):  # every layer explicitly: setters may short-cut
        batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = index >= first and not (batchnorm and freeze_batchnorm)


def batchnorm_layers(model: keras.Model) -> list[keras.layers.BatchNormalization]:
    """The BatchNorm layers of the backbone (keras.applications models are flat) and head."""
    layers = model.get_layer(BACKBONE_LAYER).layers + model.layers
    return [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]


def limit_batchnorm_momentum(model: keras.Model, momentum: float) -> int:
    """Cap every BatchNorm momentum (set before compile); returns how many changed.

    Keras' 0.99-0.999 averages the moving statistics over hundreds to thousands of
    steps: a short run from random weights would evaluate with statistics of the
    first, meaningless steps.
    """
    changed = 0
    for layer in batchnorm_layers(model):
        if layer.momentum > momentum:
            layer.momentum = momentum
            changed += 1
    return changed


def recalibrate_batchnorm(model: keras.Model, batches: Iterable[Any]) -> int:
    """Set BatchNorm moving statistics to their average over `batches` (images, ...).

    Momentum i/(i+1) at the i-th batch makes the moving mean and variance the plain
    average of the per-batch statistics: the statistics of the final weights on the
    training data, which inference then uses. Only trainable BatchNorm layers update.
    Returns the number of batches used (0 for a backbone without BatchNorm).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [layer.momentum for layer in layers]
    count = 0
    try:
        for count, batch in enumerate(batches, start=1):
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in layers:
                layer.momentum = (count - 1) / count
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return count


def count_params(model: keras.Model) -> dict[str, int]:
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {"total": model.count_params(), "trainable": int(trainable)}


@keras.saving.register_keras_serializable(package="fauna", name="BackbonePreprocessing")
class LegacyBackbonePreprocessing(keras.layers.Layer):
    """Loads models saved before preprocessing became standard layers (needs `import fauna`)."""

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        spec = get_backbone(backbone)
        self.backbone, self._preprocess = spec.name, spec.preprocess_input

    def call(self, inputs):
        return self._preprocess(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}
