"""The training input pipeline: tf.data over TFRecord shards.

Images leave here as float32 pixels in [0, 255]; each model carries its own
backbone preprocessing as its first layers, so training, evaluation, prediction
and the serving export all feed the same thing.
"""

from __future__ import annotations

from pathlib import Path

import keras
import tensorflow as tf

from fauna.config import AugmentConfig
from fauna.data.records import parse_example, shard_paths


def augmenter(cfg: AugmentConfig, seed: int | None = None) -> keras.Sequential:
    """Random flip/rotation/zoom/translation/contrast, as configured (train only)."""
    seed = cfg.seed if seed is None else seed
    layers: list[keras.layers.Layer] = []
    if cfg.horizontal_flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if cfg.rotation:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed))
    if cfg.zoom:
        layers.append(keras.layers.RandomZoom(cfg.zoom, fill_mode="reflect", seed=seed))
    if cfg.translation:
        layers.append(
            keras.layers.RandomTranslation(
                cfg.translation, cfg.translation, fill_mode="reflect", seed=seed
            )
        )
    if cfg.contrast:
        layers.append(keras.layers.RandomContrast(cfg.contrast, seed=seed))
    return keras.Sequential(layers, name="augment")


def decode_image(encoded: tf.Tensor, image_size: int) -> tf.Tensor:
    image = tf.io.decode_jpeg(encoded, channels=3)
    image = tf.image.resize_with_crop_or_pad(image, image_size, image_size)
    return tf.cast(image, tf.float32)


def make_dataset(
    directory: str | Path,
    image_size: int,
    num_classes: int,
    batch_size: int,
    *,
    training: bool = False,
    augment: AugmentConfig | None = None,
    seed: int = 42,
    with_ids: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches of (images, one-hot labels) [, ids] from a shard directory.

    training=True shuffles (files and records) and applies `augment` on the fly.
    drop_remainder: whole batches only (training over several replicas).
    Nothing is ever loaded whole into memory.
    """
    paths = [str(p) for p in shard_paths(Path(directory))]
    if not paths:
        raise FileNotFoundError(f"no TFRecord shards in {directory}")
    files = tf.data.Dataset.from_tensor_slices(paths)
    if training:
        files = files.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    ds = files.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(paths), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        # Deterministic order (seeded shuffles still shuffle): a run can be reproduced.
        deterministic=True,
    )
    if training:
        ds = ds.shuffle(4096, seed=seed, reshuffle_each_iteration=True)

    def parse(serialized: tf.Tensor):
        ex = parse_example(serialized)
        image = decode_image(ex["image/encoded"], image_size)
        label = tf.one_hot(ex["image/class/label"], num_classes)
        if with_ids:
            return image, label, ex["image/id"]
        return image, label

    ds = ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if training and augment is not None and augment.mode != "none":
        aug = augmenter(augment, seed=seed)
        ds = ds.map(lambda x, y: (aug(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)
