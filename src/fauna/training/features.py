"""The head phase on features computed once: a frozen backbone gives every image the same
pooled features each epoch, so they are computed once and the head trains on them.

Used when the phase freezes the backbone (`head`, from pretrained weights),
`train.head_features_once` is on, and either no random augmentation runs at train time or
`train.head_feature_views` is K > 0: then K augmented views of the train images (each one
pass of the augmentation layers, seeded differently) are computed once and epoch e trains
on view e mod K (`CycleViews`); validation features are never augmented. The head model is
made of the full model's own layer objects (and shares its optimizer), so training it
trains the full model: checkpoints, early stopping's best weights, fine-tuning and the
saved model are those of the recomputing path. The backbone runs in inference mode, as
it does frozen (Keras runs a non-trainable BatchNorm with its moving statistics).

Features are float32 (the pooled output; under mixed precision its float16 values
exactly): 2 KiB (VGG16, 512) to 8 KiB (ResNet50, InceptionV3, 2048) per image. Up to
`IN_MEMORY_BYTES` they are held in memory, beyond that in a .npy file in the checkpoint
folder, read batch by batch (K views: K times the size, the limit on their sum). A resumed
run computes them again (a deterministic function of the frozen weights and the images;
views: of the seeds too) rather than trusting a file from another process.

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
from typing import Any, NamedTuple

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

    def dataset(
        self, num_classes: int, batch_size: int, shuffle_seed: int | None, whole: bool = False
    ) -> Any:
        """Batches of (features, one-hot labels), reshuffled each epoch when seeded; `whole`:
        a partial last batch dropped (TrainingData.whole_batches)."""
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

        batches = index.batch(batch_size, drop_remainder=whole).map(load)
        steps = count // batch_size if whole else math.ceil(count / batch_size)
        return batches.prefetch(tf.data.AUTOTUNE).apply(
            tf.data.experimental.assert_cardinality(steps)
        )


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
    from fauna.training.trainset import class_counts

    count = sum(class_counts(directory, len(data.classes)))
    features = feature_model(model)
    values = _allocate((count, int(features.outputs[0].shape[-1])), spill)
    return Features(values, _pass(features, directory, data, batch_size, values))


def extract_views(
    model: keras.Model,
    data: TrainingData,
    batch_size: int,
    views: int,
    seed: int,
    spill: Path | None,
) -> ViewCycle:
    """`views` passes over the train shards, each through the augmentation layers (seeded
    `seed + view`, as make_dataset seeds them) and then the frozen backbone."""
    from fauna.data.input_pipeline import augmenter
    from fauna.training.trainset import class_counts

    if data.augment is None or views < 1:
        raise ValueError(f"{views} augmented views: need at least one, and augment.json")
    count = sum(class_counts(data.train_dir, len(data.classes)))
    features = feature_model(model)
    stack = _allocate((views, count, int(features.outputs[0].shape[-1])), spill)
    labels = None
    for view in range(views):
        augment = augmenter(data.augment, seed=seed + view)
        got = _pass(features, data.train_dir, data, batch_size, stack[view], augment)
        if labels is not None and not np.array_equal(got, labels):
            raise ValueError(f"{data.train_dir}: view {view} read the images in another order")
        labels = got
    return ViewCycle(stack, labels)


def _pass(
    features: keras.Model,
    directory: Path,
    data: TrainingData,
    batch_size: int,
    values: np.ndarray,
    augment: keras.Model | None = None,
) -> np.ndarray:
    """Fill `values` with the pooled features of the directory's images; their labels."""
    import tensorflow as tf

    from fauna.data.input_pipeline import make_dataset

    def run(x):
        if augment is not None:  # the real layers, training=True: random draws, in file order
            x = augment(x, training=True)
        return features(x, training=False)

    # One compiled function, called directly: under a MirroredStrategy scope too (there
    # `predict_on_batch` would split the batch over the replicas and concatenate).
    forward = tf.function(run, reduce_retracing=True)
    labels = np.empty(len(values), dtype=np.int32)
    done = 0
    for images, onehot in make_dataset(directory, data.image_size, len(data.classes), batch_size):
        batch = forward(images).numpy()
        values[done : done + len(batch)] = batch.astype(np.float32)
        labels[done : done + len(batch)] = np.argmax(onehot, axis=1)
        done += len(batch)
    if done != len(values):
        raise ValueError(f"{directory}: read {done} images, counted {len(values)}")
    return labels


def _allocate(shape: tuple[int, ...], spill: Path | None) -> np.ndarray:
    size = 4 * math.prod(shape)
    if spill is None or size <= IN_MEMORY_BYTES:
        return np.empty(shape, dtype=np.float32)
    spill.parent.mkdir(parents=True, exist_ok=True)
    log.info("head features %s (%.1f GiB) -> %s", shape, size / 2**30, spill)
    return np.lib.format.open_memmap(spill, mode="w+", dtype=np.float32, shape=shape)


class HeadPhase(NamedTuple):
    head: keras.Model
    train: Any  # batches of (features, one-hot labels)
    val: Any  # the same, or None
    callbacks: list[keras.callbacks.Callback]  # for fit (the view of each epoch)


@contextmanager
def head_features(
    model: keras.Model,
    data: TrainingData,
    batch_size: int,
    seed: int,
    scratch: Path,
    views: int = 0,
) -> Iterator[HeadPhase]:
    """The head model and its batches over features computed once; `views` > 0 with
    train-time augmentation: that many augmented views of the train images, one an epoch."""
    folder = scratch / FEATURES_DIR
    started = time.perf_counter()
    try:
        callbacks: list[keras.callbacks.Callback] = []
        if views and data.augment is not None:
            spill = folder / "train-views.npy"
            cycle = extract_views(model, data, batch_size, views, seed, spill)
            callbacks.append(CycleViews(cycle))
            train: Features = cycle
            what = f"{views} augmented views of {len(train.labels)} train"
        else:
            train = extract(model, data.train_dir, data, batch_size, folder / "train.npy")
            what = f"{len(train.labels)} train"
        val = None
        if data.val_dir is not None:
            val = extract(model, data.val_dir, data, batch_size, folder / "val.npy")
        log.info(
            "head phase: backbone features of %s and %s validation images computed once (%.1f s)",
            what,
            len(val.labels) if val else 0,
            time.perf_counter() - started,
        )
        num_classes, whole = len(data.classes), data.whole_batches
        train_ds = train.dataset(num_classes, batch_size, seed, whole)
        val_ds = val.dataset(num_classes, batch_size, None, whole) if val else None
        yield HeadPhase(head_model(model), train_ds, val_ds, callbacks)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class ViewCycle(Features):
    """K augmented views of one split: `values` is the view `select` chose (the batches
    read it when they are made, so an epoch's batches are all of its view)."""

    def __init__(self, stack: np.ndarray, labels: np.ndarray) -> None:
        super().__init__(stack[0], labels)
        self.stack = stack

    def select(self, epoch: int) -> None:
        self.values = self.stack[epoch % len(self.stack)]


class CycleViews(keras.callbacks.Callback):
    """Epoch e (numbered across phases, so a resumed run too) trains on view e mod K."""

    def __init__(self, views: ViewCycle) -> None:
        super().__init__()
        self.views = views

    def on_epoch_begin(self, epoch, logs=None):
        self.views.select(epoch)


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
