"""The head phase on features computed once: a frozen backbone gives every image the same
pooled features each epoch, so they are computed once and the head trains on them.

Used when the phase freezes the backbone (`head`, from pretrained weights), no random
augmentation runs at train time, and `train.head_features_once` is on. The head model is
made of the full model's own layer objects (and shares its optimizer), so training it
trains the full model: checkpoints, early stopping's best weights, fine-tuning and the
saved model are those of the recomputing path. The backbone runs in inference mode, as
it does frozen (Keras runs a non-trainable BatchNorm with its moving statistics).

Features are float32 (the pooled output; under mixed precision its float16 values
exactly): 2 KiB (VGG16, 512) to 8 KiB (ResNet50, InceptionV3, 2048) per image. Up to
`IN_MEMORY_BYTES` they are held in memory, beyond that in a .npy file in the checkpoint
folder, read batch by batch. A resumed run computes them again (a deterministic function
of the frozen weights and the images) rather than trusting a file from another process.

Imports Keras: import this module lazily.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from fauna.model.network import EMBEDDING_LAYER
from fauna.training.trainset import TrainingData

log = logging.getLogger(__name__)

IN_MEMORY_BYTES = 1 << 30  # features of more images go to disk (memory-mapped)
FEATURES_DIR = "head-features"
POOLED_LAYERS = ("pooled", EMBEDDING_LAYER)  # the pooled layer's name (EMBEDDING without a head)


@dataclass
class Features:
    """One split's pooled features and class indices (in memory or memory-mapped)."""

    values: np.ndarray  # (images, features) float32
    labels: np.ndarray  # (images,) int32

    def dataset(self, num_classes: int, batch_size: int, shuffle_seed: int | None) -> Any:
        """Batches of (features, one-hot labels), reshuffled each epoch when seeded."""
        import tensorflow as tf

        count, width = self.values.shape
        index = tf.data.Dataset.range(count)
        if shuffle_seed is not None:
            index = index.shuffle(count, seed=shuffle_seed, reshuffle_each_iteration=True)

        def gather(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            rows = np.sort(rows)  # the same batch; sorted reads a memory-mapped file in order
            return np.asarray(self.values[rows]), np.asarray(self.labels[rows])

        def load(rows):
            values, labels = tf.numpy_function(gather, [rows], (tf.float32, tf.int32))
            values.set_shape((None, width))
            labels.set_shape((None,))
            return values, tf.one_hot(labels, num_classes)

        batches = index.batch(batch_size).map(load).prefetch(tf.data.AUTOTUNE)
        steps = math.ceil(count / batch_size)
        return batches.apply(tf.data.experimental.assert_cardinality(steps))


def pooled_layer(model: keras.Model) -> keras.layers.Layer:
    for name in POOLED_LAYERS:
        try:
            return model.get_layer(name)
        except ValueError:
            continue
    raise ValueError(f"{model.name} has no pooled layer ({' or '.join(POOLED_LAYERS)})")


def feature_model(model: keras.Model) -> keras.Model:
    """Raw pixels -> the pooled backbone features (the full model's own layers)."""
    return keras.Model(model.inputs, pooled_layer(model).output, name="features")


def head_model(model: keras.Model) -> keras.Model:
    """Pooled features -> predictions, through the full model's own head layers.

    The functional model is a chain, so the head is every layer after the pooled one.
    """
    pooled = pooled_layer(model)
    layers = model.layers[model.layers.index(pooled) + 1 :]
    inputs = keras.Input((pooled.output.shape[-1],), dtype="float32", name="features")
    x = inputs
    for layer in layers:
        x = layer(x)
    return keras.Model(inputs, x, name=f"{model.name}_head")


def extract(
    model: keras.Model, directory: Path, data: TrainingData, batch_size: int, spill: Path | None
) -> Features:
    """One pass of the frozen backbone over a shard directory, in file order, streamed."""
    import tensorflow as tf

    from fauna.data.input_pipeline import make_dataset
    from fauna.training.trainset import class_counts

    count = sum(class_counts(directory, len(data.classes)))
    features = feature_model(model)
    width = int(features.outputs[0].shape[-1])
    values = _allocate(count, width, spill)
    labels = np.empty(count, dtype=np.int32)
    # One compiled function, called directly: under a MirroredStrategy scope too (there
    # `predict_on_batch` would split the batch over the replicas and concatenate).
    forward = tf.function(lambda x: features(x, training=False), reduce_retracing=True)
    done = 0
    for images, onehot in make_dataset(directory, data.image_size, len(data.classes), batch_size):
        batch = forward(images).numpy()
        values[done : done + len(batch)] = batch.astype(np.float32)
        labels[done : done + len(batch)] = np.argmax(onehot, axis=1)
        done += len(batch)
    if done != count:
        raise ValueError(f"{directory}: read {done} images, counted {count}")
    return Features(values, labels)


def _allocate(count: int, width: int, spill: Path | None) -> np.ndarray:
    if spill is None or count * width * 4 <= IN_MEMORY_BYTES:
        return np.empty((count, width), dtype=np.float32)
    spill.parent.mkdir(parents=True, exist_ok=True)
    log.info("head features of %s images (%.1f GiB) -> %s", count, count * width * 4 / 2**30, spill)
    return np.lib.format.open_memmap(spill, mode="w+", dtype=np.float32, shape=(count, width))


@contextmanager
def head_features(
    model: keras.Model, data: TrainingData, batch_size: int, seed: int, scratch: Path
) -> Iterator[tuple[keras.Model, Any, Any]]:
    """(head model, train batches, val batches or None) over features computed once."""
    folder = scratch / FEATURES_DIR
    started = time.perf_counter()
    try:
        train = extract(model, data.train_dir, data, batch_size, folder / "train.npy")
        val = None
        if data.val_dir is not None:
            val = extract(model, data.val_dir, data, batch_size, folder / "val.npy")
        log.info(
            "head phase: backbone features of %s train and %s validation images computed "
            "once (%.1f s)",
            len(train.labels),
            len(val.labels) if val else 0,
            time.perf_counter() - started,
        )
        num_classes = len(data.classes)
        train_ds = train.dataset(num_classes, batch_size, seed)
        val_ds = val.dataset(num_classes, batch_size, None) if val else None
        yield head_model(model), train_ds, val_ds
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class SyncStop(keras.callbacks.Callback):
    """The callbacks stop the full model (`stop_training`); `fit` runs on the head model."""

    def __init__(self, full: keras.Model, head: keras.Model) -> None:
        super().__init__()
        self.full, self.head = full, head

    def on_train_begin(self, logs=None):
        self.full.stop_training = False
        self.head.history = None  # what fit returns (the History callback fills the full's)

    def on_train_batch_end(self, batch, logs=None):
        self.head.stop_training = self.full.stop_training

    def on_epoch_end(self, epoch, logs=None):
        self.head.stop_training = self.full.stop_training
