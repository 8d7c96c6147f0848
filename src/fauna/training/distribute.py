"""Training over every device of the node: one replica per device (tf.distribute).

With more than one GPU visible (the train task asks for `pipeline.gpu_count`, the
`gpus_per_task` knob), `MirroredStrategy` keeps a copy of the model on each GPU and
averages the gradients every step. Without GPUs, more than one logical CPU device
(configured before TensorFlow starts; tests do that) is mirrored the same way; a plain
CPU machine has one and trains as before.

`train.batch_size` is per replica: the global batch is batch_size x replicas, and every
learning rate is scaled by the same factor (the linear scaling rule, Goyal et al. 2017,
arXiv:1706.02677; the scratch recipe's warm-up covers its early steps), so a step sees
the same gradient scale per image. The scaled settings are the run's settings: they
enter its fingerprint, so a checkpoint of a run on another number of devices is refused
rather than continued with another batch.

Only whole global batches are trained and validated on when mirrored (`whole_batches`):
tf.distribute splits a batch into per-replica chunks from the front, so a partial last
batch leaves a replica with an empty one, and the backbone fails on it (TensorFlow 2.21,
Keras 3.15: `Incompatible shapes: [0,32,32,3] vs. [32]` in the first BatchNorm). The
tf.distribute input guide's remedy is `drop_remainder=True`; padding would need masked
samples in every loss and metric. Training loses nothing (a different remainder of the
reshuffled images each epoch); validation leaves out the same < global batch images each
epoch, and says how many.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from fauna.config import BackboneTrainConfig
from fauna.training import TrainError
from fauna.training.trainset import TrainingData

log = logging.getLogger(__name__)

SCALED_RATES = ("learning_rate", "fine_tune_learning_rate", "scratch_learning_rate")


def training_strategy() -> Any:
    """MirroredStrategy over the GPUs (or logical CPUs) when there are several, else the
    default strategy (one device, exactly as before)."""
    import tensorflow as tf

    for kind in ("GPU", "CPU"):
        devices = tf.config.list_logical_devices(kind)
        if len(devices) > 1:
            names = [d.name for d in devices]
            log.info("training on %s %s devices (MirroredStrategy): %s", len(names), kind, names)
            return tf.distribute.MirroredStrategy(devices=names)
        if devices and kind == "GPU":
            break
    return tf.distribute.get_strategy()


def for_replicas(
    bcfg: BackboneTrainConfig, data: TrainingData, replicas: int
) -> tuple[BackboneTrainConfig, TrainingData]:
    """The run's settings and data on `replicas` devices (one: unchanged)."""
    scaled = scaled_for_replicas(bcfg, replicas)
    return scaled, whole_batches(data, scaled.batch_size, replicas)


def scaled_for_replicas(bcfg: BackboneTrainConfig, replicas: int) -> BackboneTrainConfig:
    """Global batch = per-replica batch x replicas, learning rates x replicas."""
    if replicas <= 1:
        return bcfg
    rates = {name: getattr(bcfg, name) * replicas for name in SCALED_RATES}
    scaled = dataclasses.replace(bcfg, batch_size=bcfg.batch_size * replicas, **rates)
    log.info(
        "%s replicas: global batch %s (%s per replica), learning rates x%s",
        replicas,
        scaled.batch_size,
        bcfg.batch_size,
        replicas,
    )
    return scaled


def whole_batches(data: TrainingData, batch_size: int, replicas: int) -> TrainingData:
    """`data` read in whole global batches when mirrored; too few images is one line."""
    if replicas <= 1:
        return data
    for split, images in (("train", data.train_images), ("validation", data.val_images)):
        if split == "validation" and data.val_dir is None:
            continue
        if images < batch_size:
            raise TrainError(
                f"{images} {split} images do not fill one global batch of {batch_size} "
                f"({replicas} replicas): lower train.batch_size"
            )
    left_out = data.val_images % batch_size if data.val_dir is not None else 0
    if left_out:
        log.warning(
            "%s replicas: validation on whole batches of %s, "
            "%s of %s images left out (the same ones every epoch)",
            replicas,
            batch_size,
            left_out,
            data.val_images,
        )
    return dataclasses.replace(data, whole_batches=True)
