"""Checkpoints under faults: model and state as one unit, locally and in S3.

- the store on its own (a tiny Keras model): the last two kept, damaged ones (truncated
  model or state, a model of another epoch) skipped with a warning, none usable refused;
- S3 through the fault-injection proxy: a 503 on the state upload leaves no checkpoint
  of that epoch, and a fresh machine resumes from the one before;
- real training killed with SIGKILL mid-epoch and between the model and the state
  writes: the rerun trains each epoch exactly once and resumes with the weights its
  state describes;
- a checkpoint URI on a missing bucket fails before the first epoch.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from faults import SLOW_DOWN
from test_train import make_split_dataset, tiny_config

from fauna.store import storage
from fauna.training import TrainError

ROOT = Path(__file__).resolve().parents[1]


def tiny_model(value: float):
    """A compiled two-layer model whose weights all equal `value` (tells epochs apart)."""
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.set_weights([np.full(w.shape, value, dtype="float32") for w in model.get_weights()])
    return model


def state(epoch: int, fingerprint: str = "run-a"):
    from fauna.training.checkpoints import TrainingState

    return TrainingState(
        fingerprint=fingerprint,
        phase="scratch",
        epoch=epoch,
        phase_done=False,
        lr=1e-3,
        early_stopping={"wait": 0, "best": 1.0 / (epoch + 1), "best_epoch": epoch},
        reduce_lr=None,
        decay=None,
        history=[{"epoch": e} for e in range(epoch + 1)],
    )


def saved_store(directory: Path, epochs: int, remote: str | None = None):
    from fauna.training.checkpoints import CheckpointStore

    store = CheckpointStore(directory, remote, "run-a")
    for epoch in range(epochs):
        store.save(tiny_model(float(epoch)), state(epoch), None)
    return store


def weights_value(model) -> float:
    values = {float(v) for w in model.get_weights() for v in np.unique(w)}
    assert len(values) == 1, values
    return values.pop()


# ------------------------------------------------------------------------ the store


@pytest.mark.training
def test_the_last_two_complete_epochs_are_kept(tmp_path: Path) -> None:
    store = saved_store(tmp_path / "ck", 3)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["epoch-0002", "epoch-0003"]
    assert sorted(p.name for p in (tmp_path / "ck" / "epoch-0003").iterdir()) == [
        "model.keras",
        "state.json",
    ]
    saved = json.loads((tmp_path / "ck" / "epoch-0003" / "state.json").read_text())
    assert saved["epoch"] == 2 and set(saved["files"]) == {"model.keras"}
    latest = store.latest()
    assert latest.state.epoch == 2 and weights_value(latest.model) == 2.0
    assert latest.model.optimizer is not None  # resumable: compiled, with its optimizer
    # A kill between the model and the state write leaves only a .partial folder: ignored.
    partial = tmp_path / "ck" / "epoch-0004.partial"
    partial.mkdir()
    (partial / "model.keras").write_bytes((tmp_path / "ck/epoch-0003/model.keras").read_bytes())
    assert store.latest().state.epoch == 2
    store.save(tiny_model(3.0), state(3), None)
    assert not partial.exists()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["epoch-0003", "epoch-0004"]


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.training
@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("truncated model", "model.keras: "),
        ("truncated state", "state.json unreadable"),
        ("model of another epoch", "model.keras: "),
        ("state of another epoch", "its state.json is for epoch 2"),
    ],
)
def test_a_damaged_checkpoint_is_skipped_with_a_warning(
    damage: str, reason: str, tmp_path: Path, caplog
) -> None:
    store = saved_store(tmp_path / "ck", 3)
    newest, older = tmp_path / "ck" / "epoch-0003", tmp_path / "ck" / "epoch-0002"
    if damage == "truncated model":
        _truncate(newest / "model.keras")
    elif damage == "truncated state":
        _truncate(newest / "state.json")
    elif damage == "model of another epoch":
        (newest / "model.keras").write_bytes((older / "model.keras").read_bytes())
    else:
        (newest / "state.json").write_bytes((older / "state.json").read_bytes())
    with caplog.at_level(logging.WARNING, logger="fauna.training.checkpoints"):
        latest = store.latest()
    # The epoch before, with its own weights: never a model of another epoch than its state.
    assert latest.state.epoch == 1 and weights_value(latest.model) == 1.0
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "epoch-0003 is damaged" in warning and reason in warning and "\n" not in warning
    # Epoch 3 trained again replaces the damaged folder.
    store.save(tiny_model(2.0), state(2), None)
    assert store.latest().state.epoch == 2 and weights_value(store.latest().model) == 2.0
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["epoch-0002", "epoch-0003"]


@pytest.mark.training
def test_no_usable_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    store = saved_store(tmp_path / "ck", 2)
    for folder in ("epoch-0001", "epoch-0002"):
        _truncate(tmp_path / "ck" / folder / "model.keras")
    with pytest.raises(TrainError) as caught:
        store.latest()
    message = str(caught.value)
    assert "no usable checkpoint" in message and "epoch-0001" in message
    assert "epoch-0002" in message and "\n" not in message


@pytest.mark.training
def test_a_checkpoint_of_another_run_is_refused(tmp_path: Path) -> None:
    from fauna.training.checkpoints import CheckpointStore

    saved_store(tmp_path / "ck", 1)
    with pytest.raises(TrainError, match="different training run"):
        CheckpointStore(tmp_path / "ck", None, "run-b").latest()


# ----------------------------------------------------------------------------- S3


@pytest.mark.training
def test_s3_state_upload_fails_then_a_fresh_machine_resumes_from_the_epoch_before(
    faulty_s3, tmp_path: Path, monkeypatch
) -> None:
    from fauna.training.checkpoints import CheckpointStore

    monkeypatch.setenv(storage.TIMEOUT_ENV, "3")
    remote = faulty_s3.uri("checkpoints/run-1/vgg16")
    store = saved_store(tmp_path / "pod-1", 2, remote)
    # The model of epoch 3 uploads, its state.json meets 503 SlowDown until the deadline.
    faulty_s3.proxy.only(r"^PUT .*/epoch-0003/state\.json").always(SLOW_DOWN)
    with pytest.raises(storage.StorageError, match="503|SlowDown"):
        store.save(tiny_model(2.0), state(2), None)
    faulty_s3.proxy.reset()
    keys = {k.split("run-1/vgg16/")[1] for k, _ in storage.list_keys(remote)}
    assert "epoch-0003/model.keras" in keys and "epoch-0003/state.json" not in keys

    fresh = CheckpointStore(tmp_path / "pod-2", remote, "run-a")  # the pod's disk is gone
    latest = fresh.latest()
    assert latest.state.epoch == 1 and weights_value(latest.model) == 1.0
    assert latest.where.endswith("/epoch-0002")
    fresh.save(tiny_model(2.0), state(2), None)  # epoch 3 again, complete this time
    keys = {k.split("run-1/vgg16/")[1] for k, _ in storage.list_keys(remote)}
    assert {"epoch-0003/state.json", "epoch-0002/state.json"} <= keys
    assert not any(k.startswith("epoch-0001/") for k in keys)  # the last two kept
    fresh.finish()
    keys = {k.split("run-1/vgg16/")[1] for k, _ in storage.list_keys(remote)}
    assert {k.split("/")[0] for k in keys} == {"epoch-0003"}  # after success: the newest
    assert not (tmp_path / "pod-2").exists()


def test_checkpoint_uri_on_a_missing_bucket_fails_before_training(s3, tmp_path: Path) -> None:
    from fauna.steps.train import default_checkpoint_dir, train_backbone

    data = make_split_dataset(tmp_path / "data", size=32)
    started = time.monotonic()
    with pytest.raises(storage.StorageError, match="bucket does not exist: s3://no-such-bucket"):
        train_backbone(
            data, tmp_path / "m", "vgg16", tiny_config().train,
            checkpoint_uri="s3://no-such-bucket/checkpoints/vgg16",
        )  # fmt: skip
    assert time.monotonic() - started < 20
    assert not (tmp_path / "m").exists() and not default_checkpoint_dir(tmp_path / "m").exists()


# ----------------------------------------------------------- kill -9 during training

CHILD = """
import os, signal, sys
from pathlib import Path
import keras
import fauna.training.checkpoints as checkpoints
from fauna.config import Config
from fauna.steps.train import train_backbone
import json

data, out, mode, config = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
cfg = Config.from_dict(json.loads(config)).train

class KillMidEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
    def on_train_batch_end(self, batch, logs=None):
        if mode == "mid-epoch" and self.epoch == 2 and batch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

real_digest = checkpoints.file_digest
def digest_then_kill(path):
    # save(): model.keras is written, state.json is not yet
    if mode == "between-writes" and path.parent.name == "epoch-0002.partial":
        os.kill(os.getpid(), signal.SIGKILL)
    return real_digest(path)
checkpoints.file_digest = digest_then_kill

train_backbone(data, out, "mobilenetv3small", cfg, epochs=4, export=False,
               extra_callbacks=[KillMidEpoch()])
"""


# Slow tier: two real kills and resumes (~1.5 and ~3.5 min on a loaded 2-core VM).
@pytest.mark.slow
@pytest.mark.training
@pytest.mark.parametrize("mode", ["mid-epoch", "between-writes"])
def test_killed_training_resumes_each_epoch_exactly_once(mode: str, tmp_path: Path) -> None:
    from fauna.steps.train import default_checkpoint_dir, train_backbone
    from fauna.training.checkpoints import CheckpointStore

    data = make_split_dataset(tmp_path / "data", size=32, per_class={"train": 8, "val": 2})
    cfg = tiny_config()
    out = tmp_path / "model"
    child = tmp_path / "child.py"
    child.write_text(textwrap.dedent(CHILD))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    args = [sys.executable, str(child), str(data), str(out), mode, json.dumps(cfg.to_dict())]
    killed = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not out.exists()  # the model folder appears only on success

    checkpoints = default_checkpoint_dir(out)
    done = {"mid-epoch": 2, "between-writes": 1}[mode]  # complete epochs before the kill
    left = sorted(p.name for p in checkpoints.iterdir())
    assert left[-1] == f"epoch-{done:04d}" or left[-1] == f"epoch-{done + 1:04d}.partial"
    state = json.loads((checkpoints / f"epoch-{done:04d}" / "state.json").read_text())
    latest = CheckpointStore(checkpoints, None, state["fingerprint"]).latest()
    assert latest.state.epoch == done - 1  # the weights are the ones its state describes:
    from fauna.model.artifact import load_model_file

    saved = load_model_file(checkpoints / f"epoch-{done:04d}" / "model.keras")
    for a, b in zip(latest.model.get_weights(), saved.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)

    result = train_backbone(data, out, "mobilenetv3small", cfg.train, epochs=4, export=False)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]  # each epoch once
    runs = [h["run_id"] for h in history]
    assert len(set(runs[:done])) == 1 and len(set(runs[done:])) == 1 and runs[0] != runs[-1]
    assert history[:done] == state["history"]  # the first run's epochs, untouched
    assert result.runs == 2 and not checkpoints.exists()
