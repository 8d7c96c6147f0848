"""The model folder a training run delivers (names from fauna.model.artifact).

model.keras       the model without optimizer state, standard Keras layers only
export/1/         the same model as a TF Serving SavedModel (signature `serve`)
history.json/.csv/.png, train_info.json, and classes/preprocess/source/augment.json
                  carried over from the data
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fauna import timing
from fauna.contracts import History, SourceInfo, TrainInfo
from fauna.data.dataset import (
    AUGMENT_INFO,
    CLASSES,
    PREPROCESS_INFO,
    SOURCE,
    carry_forward,
)
from fauna.model.artifact import (
    EXPORT_DIR,
    HISTORY_CSV,
    HISTORY_PNG,
    MODEL_FILE,
    SERVING_VERSION,
)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    backbone: str
    model_dir: Path
    epochs_run: int
    train_seconds: float
    images_per_second: float
    history: list[dict[str, Any]] = field(repr=False)
    # How many separate runs (first start + resumptions) produced the history.
    runs: int = 1
    # The epoch whose weights the model holds (EarlyStopping's best, or the last).
    weights_from_epoch: int | None = None

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    @property
    def kept(self) -> dict[str, Any]:
        """The history entry of the epoch whose weights were saved (else the last)."""
        found = [h for h in self.history if h["epoch"] == self.weights_from_epoch]
        return found[-1] if found else self.final

    def summary(self) -> str:
        """The step's last line: its pace and the kept weights' validation metrics (the
        `name=value` pairs Katib's `latest` strategy reads, docs/training.md)."""
        kept = self.kept
        shown = " ".join(
            f"{k}={kept[k]:.4f}" for k in ("val_loss", "val_accuracy", "val_macro_f1") if k in kept
        )
        return (
            f"{self.backbone}: {self.epochs_run} epochs, {self.train_seconds:.1f} s, "
            f"{self.images_per_second:.1f} images/s; the weights kept (epoch "
            f"{kept.get('epoch', -1) + 1}): {shown} -> {self.model_dir}"
        )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_dir"] = str(self.model_dir)
        return data

    @classmethod
    def from_folder(cls, out: Path) -> TrainResult:
        info = TrainInfo.read(out)
        return cls(
            backbone=info.backbone,
            model_dir=out,
            epochs_run=info.rest["epochs_run"],
            train_seconds=info.rest["train_seconds"],
            images_per_second=info.rest["images_per_second"],
            history=History.read(out).to_json(),
            runs=info.rest.get("runs", 1),
            weights_from_epoch=info.rest.get("weights_from_epoch"),
        )


def write_history(folder: Path, history: list[dict]) -> None:
    History(tuple(history)).write(folder)
    columns: list[str] = []
    for entry in history:
        columns += [k for k in entry if k not in columns]
    with (folder / HISTORY_CSV).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def inference_model(job: Any, model: Any) -> tuple[Any, int]:
    """A fresh, uncompiled copy (no optimizer state: a third of the size) and the number
    of batches its BatchNorm statistics were recomputed on (scratch recipe; else 0)."""
    import keras

    from fauna.model.network import recalibrate_batchnorm
    from fauna.training.trainset import calibration_batches

    batches = 0
    if job.recipe.recalibrate_batchnorm:
        batches = recalibrate_batchnorm(model, calibration_batches(job.data, job.bcfg.batch_size))
    final = keras.Model.from_config(model.get_config())
    final.set_weights(model.get_weights())
    return final, batches


def check_finite(job: Any, model: Any, epochs: int) -> None:
    """Diverged unless every weight (BatchNorm statistics included, after recalibration)
    and the outputs for a batch of training images are finite: a huge but finite loss
    can still leave a model that answers NaN."""
    import numpy as np

    from fauna.training import Diverged
    from fauna.training.callbacks import first_non_finite_weight
    from fauna.training.recipe import rate_setting
    from fauna.training.trainset import calibration_batches

    problem = first_non_finite_weight(model)
    if problem is None:
        for images, _ in calibration_batches(job.data, job.bcfg.batch_size).take(1):
            if not np.isfinite(np.asarray(model(images, training=False))).all():
                problem = "the model's outputs are not finite"
    if problem:
        hint = rate_setting(job.recipe.phases[-1], job.bcfg)
        raise Diverged(
            f"diverged after epoch {epochs}: {problem} — lower the learning rate ({hint})"
        )


@timing.timed("data_out")
def write_outputs(
    job: Any, model: Any, history: list[dict], data_dir: Path, folder: Path, export: bool
) -> None:
    """Everything the model folder holds, written into `folder` (the step's temporary output)."""
    from fauna.plots import plot_history

    final, calibrated = inference_model(job, model)
    check_finite(job, final, len(history))
    final.save(folder / MODEL_FILE)
    if export:
        serving = folder / EXPORT_DIR / SERVING_VERSION
        final.export(str(serving), format="tf_saved_model", verbose=False)
    carry_forward((CLASSES, PREPROCESS_INFO, SOURCE, AUGMENT_INFO), [data_dir], folder)
    write_history(folder, history)
    plot_history(history, folder / HISTORY_PNG, f"{job.name}: training history")
    info = TrainInfo.from_json(train_info(job, final, history, data_dir, calibrated))
    info.write(folder)


def train_info(
    job: Any, model: Any, history: list[dict], data_dir: Path, calibrated_batches: int
) -> dict[str, Any]:
    from fauna.model.network import count_params

    cfg, data = job.cfg, job.data
    source = SourceInfo.read_first(data_dir) or SourceInfo()  # none: not synthetic (as before)
    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["images"] for h in history)
    # The lowest (validation) loss of the last phase: the weights kept, when the recipe
    # restores EarlyStopping's best (pretrained); scratch keeps the last epoch's.
    last_phase = [h for h in history if h["phase"] == history[-1]["phase"]] if history else []
    best = min(last_phase, key=lambda h: h.get("val_loss", h["loss"]), default={"epoch": None})
    kept = best["epoch"] if job.recipe.restore_best_weights else len(history) - 1
    params = count_params(model)
    return {
        "backbone": job.name,
        "weights": job.bcfg.weights,
        "image_size": data.image_size,
        "num_classes": len(data.classes),
        "epochs_run": len(history),
        "train_seconds": round(train_seconds, 3),
        "images_per_second": round(images / train_seconds, 3) if train_seconds else 0.0,
        "params": params["total"],
        "trainable_params": params["trainable"],
        "train_images": data.train_images,
        "val_images": data.val_images,
        "best_epoch": best["epoch"],
        "weights_from_epoch": kept,
        "policy": job.policy,
        "runs": len({h["run_id"] for h in history}),
        "synthetic": bool(source.rest.get("synthetic", False)),
        "fingerprint": job.fingerprint,
        "recipe": {**job.recipe.describe(), "batchnorm_recalibrated_batches": calibrated_batches},
        "config": dataclasses.asdict(job.bcfg),
        "settings": {
            "early_stopping_patience": cfg.early_stopping_patience,
            "reduce_lr_factor": cfg.reduce_lr_factor,
            "reduce_lr_patience": cfg.reduce_lr_patience,
            "class_weights": cfg.class_weights,
            "augment": dataclasses.asdict(data.augment) if data.augment else None,
            "seed": cfg.seed,
        },
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
