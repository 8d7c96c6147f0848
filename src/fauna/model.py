"""Backbone + the paper's dense head, taking raw pixels.

    image float32 [0, 255] (H, W, 3)
      -> BackbonePreprocessing (the backbone's own preprocess_input, saved with the model)
      -> backbone (include_top=False), called with training=False
      -> GlobalAveragePooling2D
      -> Dense(ReLU, L1/L2) -> Dropout  ... one pair per `dense_units`, the last Dense
         named "embedding" (the penultimate layer t-SNE reads)
      -> Dense(num_classes, softmax, float32) named "predictions"

Because preprocessing is a layer, `model.keras`, prediction and the serving export
all take the same raw pixels, and nobody can feed a model the wrong normalisation.
"""

from __future__ import annotations

import math
from typing import Any

import keras

from fauna.backbones import get_backbone
from fauna.config import BackboneTrainConfig

BACKBONE_LAYER = "backbone"
EMBEDDING_LAYER = "embedding"
PREDICTIONS_LAYER = "predictions"


@keras.saving.register_keras_serializable(package="fauna")
class BackbonePreprocessing(keras.layers.Layer):
    """Applies the named backbone's `preprocess_input`; stateless, stored by name."""

    def __init__(self, backbone: str, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        spec = get_backbone(backbone)
        self.backbone = spec.name
        self._preprocess = spec.preprocess_input

    def call(self, inputs):
        return self._preprocess(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "backbone": self.backbone}


def build_model(
    backbone: str,
    image_size: int,
    num_classes: int,
    cfg: BackboneTrainConfig,
    weights: str = "none",
) -> keras.Model:
    """The classifier, with the backbone frozen (phase 1 of transfer learning)."""
    spec = get_backbone(backbone)
    base = spec.build(image_size, weights)
    base.trainable = False
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="image")
    x = BackbonePreprocessing(spec.name, name="preprocess")(inputs)
    # training=False keeps BatchNorm in inference mode under the head. (Keras 3 lets an
    # outer fit() override it, so set_trainable also keeps BatchNorm layers frozen.)
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pooled" if cfg.dense_units else EMBEDDING_LAYER)(
        x
    )
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
    (the keras-io recipe). From random weights (`weights=none`) there are no statistics
    to protect, so they train. Call compile() afterwards, or nothing changes.
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


def count_params(model: keras.Model) -> dict[str, int]:
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    return {"total": model.count_params(), "trainable": int(trainable)}


def load_model(path: str, compile: bool = False) -> keras.Model:
    """Load a saved fauna model (its custom layers are registered by importing this module)."""
    return keras.models.load_model(path, compile=compile)
