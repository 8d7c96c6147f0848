"""The training loop: start (or resume from a checkpoint), then one `fit` per recipe phase.

Imports Keras: import this module lazily.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras

from fauna.config import BackboneTrainConfig, TrainConfig
from fauna.model.network import build_model, limit_batchnorm_momentum
from fauna.training import callbacks as cb
from fauna.training.checkpoints import Checkpoint, CheckpointStore, TrainingState
from fauna.training.recipe import (
    COSINE,
    LOSS,
    PRETRAINED,
    Phase,
    Recipe,
    compile_for_phase,
    metrics,
    rate_setting,
)
from fauna.training.trainset import TrainingData, balanced_class_weights, training_datasets

log = logging.getLogger(__name__)


@dataclass
class Job:
    """What one training run works with (so helpers take one argument, not ten)."""

    name: str
    bcfg: BackboneTrainConfig
    cfg: TrainConfig
    data: TrainingData
    recipe: Recipe
    store: CheckpointStore
    fingerprint: str
    policy: str


def run_training(
    job: Job, checkpoint: Checkpoint | None, extra_callbacks: Sequence[Any] = ()
) -> tuple[keras.Model, list[dict]]:
    """Train every phase not already done; returns the model and the full history."""
    keras.utils.set_random_seed(job.cfg.seed)
    train_ds, val_ds = training_datasets(job.data, job.bcfg.batch_size, job.cfg.seed)
    model, history = _start(job, checkpoint)
    run_id = uuid.uuid4().hex[:8]
    resume = checkpoint
    for index, phase in enumerate(job.recipe.phases):
        if resume and _done(job.recipe, index, resume.state):
            continue
        mid_phase = resume if resume and resume.state.phase == phase.name else None
        if mid_phase is None:
            compile_for_phase(model, phase, job.recipe)
        run = PhaseRun(job, model, phase, history, run_id, mid_phase)
        if features_once(job, phase):
            from fauna.training.features import head_features

            batch, seed, views = job.bcfg.batch_size, job.cfg.seed, job.cfg.head_feature_views
            with head_features(model, job.data, batch, seed, job.store.dir, views) as once:
                extra = [*once.callbacks, *extra_callbacks]
                run.fit(once.train, once.val, extra, head=once.head)
        else:
            run.fit(train_ds, val_ds, extra_callbacks)
        resume = None
    return model, history


def features_once(job: Job, phase: Phase) -> bool:
    """Train this phase's head on backbone features computed once (training/features.py)?

    Only when the backbone is frozen, and either nothing random changes the images between
    epochs or `train.head_feature_views` augmented views are to be computed once.
    """
    frozen = phase.trainable_layers is None and job.recipe.start == PRETRAINED
    fixed = job.data.augment is None or job.cfg.head_feature_views > 0
    return frozen and fixed and job.cfg.head_features_once


def _done(recipe: Recipe, index: int, state: TrainingState) -> bool:
    """Did the checkpoint's run finish phase `index` already?"""
    done = recipe.phases.index(recipe.phase_named(state.phase))
    return index < done or (index == done and state.phase_done)


def _start(job: Job, checkpoint: Checkpoint | None) -> tuple[keras.Model, list[dict]]:
    if checkpoint is None:
        data, phases = job.data, job.recipe.phases
        log.info(
            "training %s (%s: weights %s, %d px, %s): %d train images, %d classes, phases %s",
            *(job.name, job.recipe.start, job.bcfg.weights, data.image_size, job.policy),
            *(data.train_images, len(data.classes)),
            ", ".join(f"{p.name} {p.epochs} epochs at lr {p.learning_rate:g}" for p in phases),
        )
        model = build_model(
            job.name,
            job.data.image_size,
            len(job.data.classes),
            job.bcfg,
            job.bcfg.weights,
            normalize_features=job.recipe.normalize_features,
        )
        if job.recipe.batchnorm_momentum is not None:
            limit_batchnorm_momentum(model, job.recipe.batchnorm_momentum)
        return model, []
    state = checkpoint.state
    log.info(
        "resuming %s after epoch %s (%s%s) from %s",
        job.name,
        state.epoch + 1,
        state.phase,
        ", phase done" if state.phase_done else "",
        checkpoint.where,
    )
    model = checkpoint.model
    if state.phase_done and checkpoint.best_weights is not None:
        model.set_weights(checkpoint.best_weights)  # as EarlyStopping does at a phase's end
    # (best weights are saved only when the recipe restores them, and not this epoch's)
    return model, [h for h in state.history if h["epoch"] <= state.epoch]


class PhaseRun:
    """One `fit` over a phase: its callbacks, and the checkpoint state they make together."""

    def __init__(
        self,
        job: Job,
        model: keras.Model,
        phase: Phase,
        history: list[dict],
        run_id: str,
        resume: Checkpoint | None,
    ) -> None:
        self.job, self.model, self.phase, self.history = job, model, phase, history
        self.resume = resume
        state = resume.state if resume else None
        cfg = job.cfg
        self.monitor = "val_loss" if job.data.val_dir is not None else "loss"
        self.recorder = cb.EpochRecorder(history, phase.name, run_id, job.data.train_images)
        self.guard = cb.DivergenceGuard(rate_setting(phase, job.bcfg))
        self.line = cb.EpochLine(job.recipe.phases[-1].end)
        self.stopper = cb.ResumableEarlyStopping(
            monitor=self.monitor,
            patience=cfg.early_stopping_patience,
            restore_best_weights=job.recipe.restore_best_weights,
            resume=state.early_stopping if state else None,
            best_weights=self._resumed_best_weights(),
        )
        self.plateau = self.decay = self.cosine = None
        if phase.schedule == COSINE:
            total_steps = phase.epochs * job.recipe.steps_per_epoch
            self.cosine = cb.WarmupCosine(phase.learning_rate, total_steps)
            return
        self.plateau = cb.ResumableReduceLROnPlateau(
            monitor=self.monitor,
            factor=cfg.reduce_lr_factor,
            patience=cfg.reduce_lr_patience,
            resume=state.reduce_lr if state else None,
        )
        if job.recipe.decay:
            resumed = state.decay if state else None
            self.decay = cb.InverseTimeDecay(job.recipe.decay, phase.learning_rate, resumed)

    def _resumed_best_weights(self) -> list | None:
        if self.resume is None or not self.job.recipe.restore_best_weights:
            return None
        if self.resume.best_weights is not None:
            return self.resume.best_weights
        stopping = self.resume.state.early_stopping or {}
        same_epoch = stopping.get("best_epoch") == self.resume.state.epoch
        return self.model.get_weights() if same_epoch else None

    def callbacks(self, extra: Sequence[Any]) -> list[Any]:
        """Order matters: the divergence guard first (a diverged epoch is never saved), the
        schedule before the batches, the checkpoint after the rest."""
        chosen = [self.guard, self.recorder, self.decay, self.cosine, self.stopper, self.plateau]
        chosen.append(self.line)
        return [c for c in chosen if c is not None] + [cb.Checkpointer(self.save), *extra]

    def state(self, epoch: int) -> TrainingState:
        """The one place the checkpoint state is put together."""
        return TrainingState(
            fingerprint=self.job.fingerprint,
            phase=self.phase.name,
            epoch=epoch,
            phase_done=bool(self.model.stop_training) or epoch + 1 >= self.phase.end,
            lr=cb.current_lr(self.model),
            early_stopping=self.stopper.state(),
            reduce_lr=self.plateau.state() if self.plateau else None,
            decay=self.decay.state() if self.decay else None,
            history=list(self.history),
        )

    def save(self, epoch: int) -> None:
        stopper = self.stopper
        best = stopper.best_weights if stopper.best_epoch != epoch else None
        self.job.store.save(self.model, self.state(epoch), best)

    def fit(
        self, train_ds: Any, val_ds: Any, extra: Sequence[Any], head: keras.Model | None = None
    ) -> None:
        """`head`: fit that model (the full model's head layers) on feature batches; the
        callbacks still see the full model, so what they save and restore is the same."""
        first = self.resume.state.epoch + 1 if self.resume else self.phase.start
        if self.resume and self.plateau is not None:
            self.model.optimizer.learning_rate = self.resume.state.lr
        log.info(
            "%s: epochs %s..%s, lr %g (%s)",
            self.phase.name,
            first + 1,
            self.phase.end,
            self.phase.learning_rate,
            self.phase.schedule,
        )
        counts = self.job.data.class_counts
        callbacks: Any = self.callbacks(extra)
        trainer = self.model
        if head is not None:
            from fauna.training.features import SyncStop

            head.compile(  # the full model's optimizer: its state is the checkpoint's
                optimizer=self.model.optimizer, loss=LOSS, metrics=metrics()
            )
            callbacks.append(SyncStop(self.model, head))
            callbacks = keras.callbacks.CallbackList(callbacks, add_history=True, model=self.model)
            trainer = head
        trainer.fit(
            train_ds,
            validation_data=val_ds,
            epochs=self.phase.end,
            initial_epoch=first,
            class_weight=balanced_class_weights(counts) if self.job.cfg.class_weights else None,
            callbacks=callbacks,
            shuffle=False,  # the tf.data pipeline shuffles
            verbose=0,  # one line per epoch instead (cb.EpochLine)
        )
