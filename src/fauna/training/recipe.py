"""What to train, when, and how fast: one recipe per start (pretrained or random weights).

Pretrained (`weights: imagenet` or a weights file), the paper's two phases:
  head       the backbone frozen, only the new dense head learns (`head_epochs` at
             `learning_rate`), ReduceLROnPlateau and the optional inverse-time `decay`;
  fine_tune  the top `fine_tune_layers` unfrozen, BatchNorm kept frozen (the keras-io
             recipe), recompiled at `fine_tune_learning_rate` for `fine_tune_epochs`.

From random weights (`weights: none`), one phase:
  scratch    every layer trains from the first epoch (a frozen random backbone gives
             nearly the same features for every image), for head_epochs +
             fine_tune_epochs epochs; the learning rate warms up linearly over the first
             steps to `scratch_learning_rate`, then follows a cosine down to zero;
             the pooled features are batch-normalised before the dense head (drifting
             features would otherwise push every ReLU unit of the head below zero);
             BatchNorm momentum is capped for the number of steps, and the moving
             statistics are recomputed on the training images before the model is saved;
             the annealed last epoch's weights are kept (EarlyStopping may still stop the
             run, but restoring a "best" epoch of a small validation set picked noisy
             mid-run weights).

Epochs are numbered across phases.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from fauna.config import BackboneTrainConfig
from fauna.model.backbones import is_pretrained
from fauna.training import TrainError

PRETRAINED, SCRATCH = "pretrained", "scratch"
PLATEAU, COSINE = "plateau", "cosine"
LOSS = "categorical_crossentropy"


@dataclass(frozen=True)
class Phase:
    name: str  # head | fine_tune | scratch
    start: int  # first epoch (global numbering)
    end: int  # one past the last epoch
    learning_rate: float
    trainable_layers: int | None  # None = backbone frozen, -1 = all, N = the top N
    schedule: str  # plateau (ReduceLROnPlateau + optional decay) | cosine (warm-up + cosine)

    @property
    def epochs(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Recipe:
    start: str  # pretrained | scratch
    phases: tuple[Phase, ...]
    steps_per_epoch: int
    decay: float  # inverse-time decay per step (plateau phases), 0 = off
    batchnorm_momentum: float | None  # cap on BatchNorm momentum; None = leave as built
    recalibrate_batchnorm: bool
    normalize_features: bool  # BatchNorm between the pooled features and the head
    restore_best_weights: bool  # at a phase's end, EarlyStopping's best epoch; else the last

    @property
    def freeze_batchnorm(self) -> bool:
        """Pretrained statistics are protected; random ones must learn."""
        return self.start == PRETRAINED

    def phase_named(self, name: str) -> Phase:
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise TrainError(f"the checkpoint's phase {name!r} is not in this recipe")

    def describe(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "phases": [dataclasses.asdict(p) for p in self.phases],
            "batchnorm_momentum": self.batchnorm_momentum,
            "recalibrate_batchnorm": self.recalibrate_batchnorm,
            "normalize_features": self.normalize_features,
            "restore_best_weights": self.restore_best_weights,
        }


def with_total_epochs(cfg: BackboneTrainConfig, total: int) -> BackboneTrainConfig:
    """`--epochs N`: N epochs in all, split between the phases in the configured proportion.

    The head always gets at least one epoch; the rest fine-tunes. With the paper's
    10 + 90, N=2 gives 1 + 1 and N=10 gives 1 + 9; N=1 trains the head only. From
    random weights the phases merge, so N is simply the number of epochs.
    """
    if total < 1:
        raise TrainError(f"--epochs must be at least 1, got {total}")
    planned = cfg.head_epochs + cfg.fine_tune_epochs
    head = round(total * cfg.head_epochs / planned) if planned else total
    head = min(total, max(1, head))
    return dataclasses.replace(cfg, head_epochs=head, fine_tune_epochs=total - head)


def scratch_batchnorm_momentum(steps_per_epoch: int) -> float:
    """A moving average over about a quarter epoch, kept within [0.9, 0.99]."""
    return min(0.99, max(0.9, 1.0 - 4.0 / max(1, steps_per_epoch)))


def plan_recipe(cfg: BackboneTrainConfig, steps_per_epoch: int) -> Recipe:
    """The phases (empty ones dropped) and BatchNorm handling for this start."""
    if not is_pretrained(cfg.weights):
        total = cfg.head_epochs + cfg.fine_tune_epochs
        scratch = Phase(SCRATCH, 0, total, cfg.scratch_learning_rate, -1, COSINE)
        return Recipe(
            start=SCRATCH,
            phases=(scratch,),
            steps_per_epoch=steps_per_epoch,
            decay=0.0,
            batchnorm_momentum=scratch_batchnorm_momentum(steps_per_epoch),
            recalibrate_batchnorm=True,
            normalize_features=True,
            restore_best_weights=False,
        )
    head_end = cfg.head_epochs
    phases = (
        Phase("head", 0, head_end, cfg.learning_rate, None, PLATEAU),
        Phase(
            "fine_tune",
            head_end,
            head_end + cfg.fine_tune_epochs,
            cfg.fine_tune_learning_rate,
            cfg.fine_tune_layers,
            PLATEAU,
        ),
    )
    return Recipe(
        start=PRETRAINED,
        phases=tuple(p for p in phases if p.epochs > 0),
        steps_per_epoch=steps_per_epoch,
        decay=cfg.decay,
        batchnorm_momentum=None,
        recalibrate_batchnorm=False,
        normalize_features=False,
        restore_best_weights=True,
    )


def rate_setting(phase: Phase, cfg: BackboneTrainConfig) -> str:
    """The setting behind `phase`'s learning rate, with its value (`train.learning_rate=0.001`)."""
    key = {"head": "learning_rate", "fine_tune": "fine_tune_learning_rate"}.get(
        phase.name, "scratch_learning_rate"
    )
    return f"train.{key}={getattr(cfg, key):g}"


def warmup_cosine(step: int, total_steps: int, peak: float) -> float:
    """Linear warm-up over ~10% of the steps (at most 1,000), then a cosine down to zero."""
    warmup = max(1, min(1000, total_steps // 10))
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return peak * 0.5 * (1.0 + math.cos(math.pi * progress))


def metrics() -> list[Any]:
    import keras

    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.TopKCategoricalAccuracy(k=3, name="top3_accuracy"),
        keras.metrics.AUC(name="auc"),
        keras.metrics.F1Score(average="macro", name="macro_f1"),
    ]


def compile_for_phase(model: Any, phase: Phase, recipe: Recipe) -> None:
    """Set what trains in `phase` and compile a fresh optimizer for it."""
    import keras

    from fauna.model.network import set_trainable

    set_trainable(model, phase.trainable_layers, freeze_batchnorm=recipe.freeze_batchnorm)
    # jit_compile stays Keras' "auto" (XLA off without an accelerator): on the CPU XLA made
    # every smoke backbone's training slower (docs/performance.md, bench/bench_xla.py).
    model.compile(
        optimizer=keras.optimizers.Adam(phase.learning_rate),
        loss=LOSS,
        metrics=metrics(),
    )
