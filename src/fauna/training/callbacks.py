"""The Keras callbacks of a training run. Imports Keras: import this module lazily.

The resumable ones carry a `state()` (what a checkpoint stores) and accept it back,
so a resumed run continues with the same counters as an uninterrupted one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import keras

from fauna.training.recipe import warmup_cosine


def current_lr(model: keras.Model) -> float:
    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _optimizer_step(model: keras.Model) -> int:
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


class EpochRecorder(keras.callbacks.Callback):
    """Times each epoch (train part and total) and appends one history entry."""

    def __init__(self, history: list[dict], phase: str, run_id: str, images: int) -> None:
        super().__init__()
        self.history, self.phase, self.run_id, self.images = history, phase, run_id, images

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._val_start = None
        self._started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")

    def on_test_begin(self, logs=None):
        if self._val_start is None:
            self._val_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        end = time.perf_counter()
        entry: dict[str, Any] = {
            "epoch": int(epoch),
            "phase": self.phase,
            "lr": current_lr(self.model),
            "run_id": self.run_id,
            "started_at": self._started_at,
            "seconds": round(end - self._start, 3),
            "train_seconds": round((self._val_start or end) - self._start, 3),
            "images": self.images,
        }
        entry.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        self.history.append(entry)


class _ResumableCounters:
    """A Keras callback whose counters (`COUNTERS`) a checkpoint stores and gives back.

    Mixed in before the Keras class: `on_train_begin` lets Keras reset, then restores.
    """

    COUNTERS: tuple[str, ...] = ()
    _resume: dict | None = None  # the checkpoint's state(), set by the subclass

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        for name in self.COUNTERS if self._resume else ():
            setattr(self, name, self._resume[name])

    def state(self) -> dict:
        """The counters as JSON values: `best` a float (or None), the others ints."""
        values = {name: getattr(self, name) for name in self.COUNTERS}
        return {
            name: None if value is None else float(value) if name == "best" else int(value)
            for name, value in values.items()
        }


class ResumableEarlyStopping(_ResumableCounters, keras.callbacks.EarlyStopping):
    """EarlyStopping whose counters (and best weights, when restored) survive a restart."""

    COUNTERS = ("wait", "best", "best_epoch")

    def __init__(self, *args, resume: dict | None = None, best_weights=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume, self._resume_weights = resume, best_weights

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self._resume:
            self.best_weights = self._resume_weights


class ResumableReduceLROnPlateau(_ResumableCounters, keras.callbacks.ReduceLROnPlateau):
    """ReduceLROnPlateau whose counters survive a restart."""

    COUNTERS = ("best", "wait", "cooldown_counter")

    def __init__(self, *args, resume: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._resume = resume


class InverseTimeDecay(keras.callbacks.Callback):
    """The paper's Keras `decay`: lr = base / (1 + decay * step), every step.

    A plain callback (not a schedule) so ReduceLROnPlateau can still lower the
    rate: a reduction it makes is folded into `base` at the next epoch.
    """

    def __init__(self, decay: float, base: float, resume: dict | None = None) -> None:
        super().__init__()
        self.decay = decay
        self.base = (resume or {}).get("base", base)
        self.last_set = (resume or {}).get("last_set")

    def on_train_begin(self, logs=None):
        self.step = _optimizer_step(self.model)

    def on_epoch_begin(self, epoch, logs=None):
        current = current_lr(self.model)
        if self.last_set and not math.isclose(current, self.last_set, rel_tol=1e-4):
            self.base *= current / self.last_set

    def on_train_batch_begin(self, batch, logs=None):
        self.last_set = self.base / (1.0 + self.decay * self.step)
        self.model.optimizer.learning_rate = self.last_set

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def state(self) -> dict:
        return {"base": self.base, "last_set": self.last_set}


class WarmupCosine(keras.callbacks.Callback):
    """The scratch schedule (`recipe.warmup_cosine`), driven by the optimizer's step count.

    The step count is part of the optimizer state a checkpoint restores, so a resumed
    run continues the same curve without state of its own.
    """

    def __init__(self, peak: float, total_steps: int) -> None:
        super().__init__()
        self.peak, self.total_steps = peak, total_steps

    def on_train_begin(self, logs=None):
        self.step = _optimizer_step(self.model)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate = warmup_cosine(self.step, self.total_steps, self.peak)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1


class Checkpointer(keras.callbacks.Callback):
    """After every epoch, once the callbacks before it have updated: `save(epoch)`."""

    def __init__(self, save: Callable[[int], None]) -> None:
        super().__init__()
        self.save = save

    def on_epoch_end(self, epoch, logs=None):
        self.save(epoch)
