"""The Keras callbacks of a training run. Imports Keras: import this module lazily.

The resumable ones carry a `state()` (what a checkpoint stores) and accept it back,
so a resumed run continues with the same counters as an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import keras
import numpy as np

from fauna.logs import duration
from fauna.training import Diverged
from fauna.training.recipe import warmup_cosine

# The per-epoch line reads as the train step's ("[train] epoch 3/10: ...").
progress = logging.getLogger("fauna.steps.train")

# The metrics of the per-epoch line, in this order (then the same with `val_`).
EPOCH_METRICS = ("loss", "accuracy", "top3_accuracy", "auc", "macro_f1")


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


def _not_finite(value: Any) -> str | None:
    """'NaN' or 'inf' when `value` (a number or an array) holds one, else None."""
    array = np.asarray(value, dtype="float64")
    if np.isnan(array).any():
        return "NaN"
    return "inf" if np.isinf(array).any() else None


def first_non_finite_weight(model: keras.Model) -> str | None:
    """'<weight path> is NaN' for the first model weight that is not finite, else None."""
    for weight in model.weights:
        bad = _not_finite(keras.ops.convert_to_numpy(weight))
        if bad:
            return f"weight {weight.path} is {bad}"
    return None


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss (every step) or weight (every epoch).

    First in the callback list: a diverged epoch is never checkpointed. `hint` names
    the setting to lower (e.g. `train.scratch_learning_rate=1000`).
    """

    def __init__(self, hint: str) -> None:
        super().__init__()
        self.hint, self.epoch = hint, 0

    def _stop(self, where: str, what: str) -> None:
        raise Diverged(f"diverged at {where}: {what} — lower the learning rate ({self.hint})")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        bad = _not_finite((logs or {}).get("loss", 0.0))
        if bad:
            self._stop(f"epoch {self.epoch + 1}, step {batch + 1}", f"loss is {bad}")

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            bad = _not_finite((logs or {}).get(key, 0.0))
            if bad:
                self._stop(f"the end of epoch {epoch + 1}", f"{key} is {bad}")
        weight = first_non_finite_weight(self.model)
        if weight:
            self._stop(f"the end of epoch {epoch + 1}", weight)


class EpochLine(keras.callbacks.Callback):
    """One log line per epoch, `name=value` pairs (what Katib's stdout collector parses,
    docs/training.md) and the time left for the remaining epochs at this run's pace."""

    def __init__(self, total_epochs: int) -> None:
        super().__init__()
        self.total, self.seconds, self.epochs = total_epochs, 0.0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        took = time.perf_counter() - self._start
        self.seconds, self.epochs = self.seconds + took, self.epochs + 1
        logs = logs or {}
        names = [*EPOCH_METRICS, *(f"val_{m}" for m in EPOCH_METRICS)]
        pairs = " ".join(f"{k}={float(logs[k]):.4g}" for k in names if k in logs)
        left = max(0, self.total - epoch - 1) * self.seconds / self.epochs
        progress.info(
            "epoch %d/%d: %s lr=%.3g (%.1f s; %s elapsed, ETA %s)",
            *(epoch + 1, self.total, pairs, current_lr(self.model), took),
            *(duration(self.seconds), duration(left)),
        )


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
