"""The split (or augment) output as training reads it: shards, class counts, augmentation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fauna.config import AugmentConfig
from fauna.contracts import AugmentInfo, PreprocessInfo
from fauna.data.dataset import AUGMENT_INFO, DatasetError, read_classes

# Batches of clean training images used to recompute BatchNorm statistics (scratch recipe).
CALIBRATION_BATCHES = 100


@dataclass
class TrainingData:
    classes: list[str]
    image_size: int
    train_dir: Path
    val_dir: Path | None
    augment: AugmentConfig | None
    class_counts: list[int]
    val_images: int
    # Only whole batches (several replicas: tf.distribute would hand one an empty batch).
    whole_batches: bool = False

    @property
    def train_images(self) -> int:
        return sum(self.class_counts)

    def steps_per_epoch(self, batch_size: int) -> int:
        return self.steps(self.train_images, batch_size)

    def steps(self, images: int, batch_size: int) -> int:
        """Batches of `images` per pass: a partial last one dropped with `whole_batches`."""
        return images // batch_size if self.whole_batches else math.ceil(images / batch_size)


def augment_settings(data: Path) -> AugmentConfig | None:
    """Train-time augmentation from augment.json; None when absent or switched off.

    The augment step writes the AugmentConfig fields at the top level of augment.json,
    beside `train_time_augmentation` and its counts.
    """
    path = data / AUGMENT_INFO
    if not path.is_file():
        return None
    info = AugmentInfo.read(data)
    if not info.train_time_augmentation:
        return None
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    settings = {key: value for key, value in info.rest.items() if key in known}
    settings["mode"] = "augment"  # the layers run at train time whatever the balancing was
    return AugmentConfig(**settings)


def class_counts(directory: Path, num_classes: int) -> list[int]:
    """Images per class in a shard directory (one streaming pass, no JPEG decoding)."""
    import numpy as np
    import tensorflow as tf

    from fauna.data.records import parse_example, shard_paths

    paths = [str(p) for p in shard_paths(directory)]
    counts = np.zeros(num_classes, dtype=np.int64)
    if not paths:
        return counts.tolist()
    labels = tf.data.TFRecordDataset(paths).map(
        lambda s: parse_example(s)["image/class/label"], num_parallel_calls=tf.data.AUTOTUNE
    )
    for batch in labels.batch(4096).as_numpy_iterator():
        if batch.size and (batch.min() < 0 or batch.max() >= num_classes):
            raise DatasetError(f"{directory}: a label index is outside classes.json")
        counts += np.bincount(batch, minlength=num_classes)
    return counts.tolist()


def load_training_data(data: Path) -> TrainingData:
    from fauna.data.records import shard_paths

    classes = read_classes(data)
    info = PreprocessInfo.read(data)
    train_dir, val_dir = data / "train", data / "val"
    if not shard_paths(train_dir):
        raise DatasetError(f"no training shards in {train_dir}: is {data} a split dataset?")
    counts = class_counts(train_dir, len(classes))
    has_val = bool(shard_paths(val_dir))
    return TrainingData(
        classes=classes,
        image_size=info.image_size,
        train_dir=train_dir,
        val_dir=val_dir if has_val else None,
        augment=augment_settings(data),
        class_counts=counts,
        val_images=sum(class_counts(val_dir, len(classes))) if has_val else 0,
    )


def balanced_class_weights(counts: Sequence[int]) -> dict[int, float]:
    """n / (k * n_c): every class contributes equally to the loss (absent classes: 1)."""
    total, present = sum(counts), sum(1 for c in counts if c)
    return {i: (total / (present * c) if c else 1.0) for i, c in enumerate(counts)}


def training_datasets(data: TrainingData, batch_size: int, seed: int) -> tuple[Any, Any]:
    """(train, val or None) tf.data pipelines with known lengths (real progress, no warnings)."""
    import tensorflow as tf

    from fauna.data.input_pipeline import make_dataset

    num_classes = len(data.classes)
    train = make_dataset(
        data.train_dir,
        data.image_size,
        num_classes,
        batch_size,
        training=True,
        augment=data.augment,
        seed=seed,
        drop_remainder=data.whole_batches,
    ).apply(tf.data.experimental.assert_cardinality(data.steps_per_epoch(batch_size)))
    if data.val_dir is None:
        return train, None
    val_steps = data.steps(data.val_images, batch_size)
    val = make_dataset(
        data.val_dir, data.image_size, num_classes, batch_size, drop_remainder=data.whole_batches
    )
    return train, val.apply(tf.data.experimental.assert_cardinality(val_steps))


def calibration_batches(data: TrainingData, batch_size: int) -> Any:
    """Clean (not augmented, not shuffled) training images for BatchNorm statistics."""
    from fauna.data.input_pipeline import make_dataset

    dataset = make_dataset(data.train_dir, data.image_size, len(data.classes), batch_size)
    return dataset.take(CALIBRATION_BATCHES)
