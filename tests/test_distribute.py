"""Training over several devices (fauna.training.distribute): MirroredStrategy, tested on
two logical CPU devices (each run in a subprocess: devices are fixed before TensorFlow
starts).

Two replicas at batch 2 each (global 4, learning rates x2) against one device at batch 4
and the doubled rates: the same global batch and step, so the same loss curve. A weights
file stands in for ImageNet: the pretrained recipe keeps BatchNorm in inference mode
(per-replica batch statistics would otherwise differ from one device's) and dropout is
off; what remains is the order of float sums, hence the tolerance.

A partial last batch (18 train images at global batch 4, 9 validation images) used to
give a replica an empty batch in the fine-tuning phase, and BatchNorm failed on it
(`Incompatible shapes: [0,32,32,3] vs. [32]`); mirrored training now reads whole batches
only (fauna.training.distribute.whole_batches).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_train import make_split_dataset

SIZE = 32
TOLERANCE = 1e-3  # per epoch, on loss and val_loss (float sums in another order)

RUNNER = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf

    devices, data, out, weights, batch, rate, kill = sys.argv[1:8]
    if int(devices) > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * int(devices)
        )
    import keras
    from fauna.config import Config
    from fauna.steps.train import train_backbone
    from fauna.training.distribute import training_strategy

    class Killed(Exception):
        pass

    class KillAfter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 >= int(kill):
                raise Killed()

    cfg = Config.from_dict({"train": {
        "weights": weights, "batch_size": int(batch), "learning_rate": float(rate),
        "fine_tune_learning_rate": float(rate) / 10, "dense_units": [16], "dropout": 0.0,
        "head_epochs": 2, "fine_tune_epochs": 1, "fine_tune_layers": 12,
        "mixed_precision": False, "overrides": {},
    }}).train
    print("REPLICAS", training_strategy().num_replicas_in_sync, flush=True)
    extra = [KillAfter()] if int(kill) else []
    try:
        train_backbone(data, out, "mobilenetv2", cfg, export=False, extra_callbacks=extra)
    except Killed:
        print("KILLED", flush=True)
    """
)


def run(devices: int, data: Path, out: Path, weights: Path, batch: int, rate: float, kill=0):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = [str(devices), str(data), str(out), str(weights), str(batch), str(rate), str(kill)]
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"REPLICAS {devices}" in done.stdout, done.stdout
    return done.stdout + done.stderr


def curve(out: Path) -> list[tuple[str, float, float]]:
    history = json.loads((out / "history.json").read_text())
    return [(h["phase"], h["loss"], h["val_loss"]) for h in history]


@pytest.mark.training
@pytest.mark.slow  # three training subprocesses: 3-7 min on 2 shared cores
def test_two_replicas_follow_one_device_at_the_same_global_batch_and_resume(tmp_path) -> None:
    from fauna.model.backbones import get_backbone

    # 12 train and 12 validation images: whole global batches, so both runs see every image
    data = make_split_dataset(tmp_path / "data", size=SIZE, per_class={"train": 4, "val": 4})
    weights = tmp_path / "mobilenetv2.weights.h5"
    get_backbone("mobilenetv2").build(SIZE, "none").save_weights(weights)

    run(1, data, tmp_path / "one", weights, batch=4, rate=2e-3)  # global 4 at 2e-3
    two = tmp_path / "two"
    assert "KILLED" in run(2, data, two, weights, batch=2, rate=1e-3, kill=1)
    run(2, data, two, weights, batch=2, rate=1e-3)  # resumed mid head phase on 2 replicas

    one_curve, two_curve = curve(tmp_path / "one"), curve(two)
    assert [p for p, *_ in two_curve] == ["head", "head", "fine_tune"]
    for (phase_a, loss_a, val_a), (phase_b, loss_b, val_b) in zip(
        one_curve, two_curve, strict=True
    ):
        assert phase_a == phase_b
        assert abs(loss_a - loss_b) < TOLERANCE and abs(val_a - val_b) < TOLERANCE, (
            one_curve,
            two_curve,
        )
    info = json.loads((two / "train_info.json").read_text())
    assert '"batch_size": 4' in json.dumps(info)  # the global batch is what the run records


@pytest.mark.training
@pytest.mark.slow  # one training subprocess: ~1.5 min on 2 shared cores
def test_a_partial_last_batch_over_two_replicas_trains_on_whole_batches(tmp_path) -> None:
    """18 train and 9 validation images at global batch 4: it crashed (an empty replica
    batch in fine-tuning); now 4 whole batches of each, one validation image left out."""
    from fauna.model.backbones import get_backbone

    data = make_split_dataset(tmp_path / "data", size=SIZE, per_class={"train": 6, "val": 3})
    weights = tmp_path / "mobilenetv2.weights.h5"
    get_backbone("mobilenetv2").build(SIZE, "none").save_weights(weights)
    out = tmp_path / "two"
    log = run(2, data, out, weights, batch=2, rate=1e-3)
    assert "1 of 9 images left out" in log
    history = json.loads((out / "history.json").read_text())
    assert [h["phase"] for h in history] == ["head", "head", "fine_tune"]
    assert all(math.isfinite(h["loss"]) and math.isfinite(h["val_loss"]) for h in history)


def test_too_few_images_for_one_global_batch_is_one_line(tmp_path) -> None:
    from fauna.training import TrainError
    from fauna.training.distribute import whole_batches
    from fauna.training.trainset import load_training_data

    data = make_split_dataset(tmp_path / "data", size=SIZE, per_class={"train": 2, "val": 1})
    loaded = load_training_data(data)  # 6 train, 3 validation images
    assert whole_batches(loaded, 8, 1) is loaded  # one device: every image, as before
    with pytest.raises(TrainError, match="6 train images do not fill one global batch of 8"):
        whole_batches(loaded, 8, 2)
    with pytest.raises(TrainError, match="3 validation images do not fill one global batch of 4"):
        whole_batches(loaded, 4, 2)
    whole = whole_batches(loaded, 3, 3)
    assert whole.whole_batches and whole.steps_per_epoch(3) == 2 and whole.steps(7, 3) == 2
