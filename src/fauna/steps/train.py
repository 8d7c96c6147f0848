"""Fine-tune one backbone on a split dataset: two-phase transfer learning, resumable.

Phase "head": the backbone is frozen and only the new dense head learns
(`head_epochs` at `learning_rate`). Phase "fine_tune": the top `fine_tune_layers`
of the backbone are unfrozen (BatchNorm stays frozen), the model is recompiled and
trained at `fine_tune_learning_rate` for `fine_tune_epochs` (the keras-io recipe).
Epochs are numbered across both phases.

Every epoch ends with a checkpoint (the full model with its optimizer state, plus a
small state.json: phase, epoch, callback state, history). Run the step again with
the same output folder (or the same `checkpoint_uri` on S3, for a preempted pod) and
it continues after the last completed epoch instead of starting over.

Output folder:
    model.keras, export/1/ (SavedModel for TF Serving), classes.json, preprocess.json,
    source.json, history.json, history.csv, history.png, train_info.json,
    checkpoints/state.json (the checkpoint itself is removed after success)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fauna.config import AugmentConfig, BackboneTrainConfig, Config, TrainConfig
from fauna.dataset import (
    AUGMENT_INFO,
    CLASSES,
    PREPROCESS_INFO,
    SOURCE,
    DatasetError,
    carry_forward,
    read_classes,
    read_json,
    write_json,
)
from fauna.errors import FaunaError
from fauna.plots import plot_history

log = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
EXPORT_DIR = "export"
SERVING_VERSION = "1"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
TRAIN_INFO = "train_info.json"
CHECKPOINTS = "checkpoints"
STATE_FILE = "state.json"
CHECKPOINT_FILE = "last.keras"
BEST_WEIGHTS_FILE = "best_weights.npz"
PHASES = ("head", "fine_tune")
# Per-epoch metrics (train and val_), as Keras names them in the logs.
METRIC_NAMES = ("loss", "accuracy", "top3_accuracy", "auc", "macro_f1")


class TrainError(FaunaError):
    """Training cannot start or continue (one clear line)."""


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

    @property
    def final(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["model_dir"] = str(self.model_dir)
        return data


@dataclass(frozen=True)
class Phase:
    name: str
    start: int  # first epoch (global numbering)
    end: int  # one past the last epoch
    learning_rate: float
    fine_tune_layers: int | None  # None = backbone frozen


@dataclass
class TrainingData:
    classes: list[str]
    image_size: int
    train_dir: Path
    val_dir: Path | None
    augment: AugmentConfig | None
    class_counts: list[int]
    val_images: int

    @property
    def train_images(self) -> int:
        return sum(self.class_counts)


def with_total_epochs(cfg: BackboneTrainConfig, total: int) -> BackboneTrainConfig:
    """`--epochs N`: N epochs in all, split between the phases in the configured proportion.

    The head always gets at least one epoch; the rest fine-tunes. With the paper's
    10 + 90, N=2 gives 1 + 1 and N=10 gives 1 + 9; N=1 trains the head only.
    """
    if total < 1:
        raise TrainError(f"--epochs must be at least 1, got {total}")
    planned = cfg.head_epochs + cfg.fine_tune_epochs
    head = round(total * cfg.head_epochs / planned) if planned else total
    head = min(total, max(1, head))
    return dataclasses.replace(cfg, head_epochs=head, fine_tune_epochs=total - head)


def plan_phases(cfg: BackboneTrainConfig) -> list[Phase]:
    head_end = cfg.head_epochs
    return [
        Phase("head", 0, head_end, cfg.learning_rate, None),
        Phase(
            "fine_tune",
            head_end,
            head_end + cfg.fine_tune_epochs,
            cfg.fine_tune_learning_rate,
            cfg.fine_tune_layers,
        ),
    ]


# --------------------------------------------------------------------------- data


def augment_settings(data: Path) -> AugmentConfig | None:
    """Train-time augmentation from augment.json; None when absent or switched off.

    Layer settings may sit at the top level or under "settings"/"layers" (as the
    augment step writes them); the more specific one wins.
    """
    path = data / AUGMENT_INFO
    if not path.is_file():
        return None
    info = read_json(path)
    if not info.get("train_time_augmentation", info.get("mode") == "augment"):
        return None
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    settings: dict[str, Any] = {}
    for source in (info.get("settings") or {}, info.get("layers") or {}, info):
        settings.update({k: v for k, v in source.items() if k in known})
    settings["mode"] = "augment"  # the layers run at train time whatever the balancing was
    return AugmentConfig(**settings)


def class_counts(directory: Path, num_classes: int) -> list[int]:
    """Images per class in a shard directory (one streaming pass, no JPEG decoding)."""
    import numpy as np
    import tensorflow as tf

    from fauna.records import parse_example, shard_paths

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
    from fauna.records import shard_paths

    classes = read_classes(data)
    info = read_json(data / PREPROCESS_INFO)
    train_dir, val_dir = data / "train", data / "val"
    if not shard_paths(train_dir):
        raise DatasetError(f"no training shards in {train_dir}: is {data} a split dataset?")
    counts = class_counts(train_dir, len(classes))
    has_val = bool(shard_paths(val_dir))
    return TrainingData(
        classes=classes,
        image_size=int(info["image_size"]),
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


# ---------------------------------------------------------------------- callbacks


def _callbacks_module():
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Times each epoch (train part and total) and appends one history entry."""

        def __init__(self, history: list[dict], phase: str, run_id: str, images: int):
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
            train_end = self._val_start or end
            entry = {
                "epoch": int(epoch),
                "phase": self.phase,
                "lr": _lr(self.model),
                "run_id": self.run_id,
                "started_at": self._started_at,
                "seconds": round(end - self._start, 3),
                "train_seconds": round(train_end - self._start, 3),
                "images": self.images,
            }
            for key, value in (logs or {}).items():
                if key != "learning_rate":
                    entry[key] = float(value)
            self.history.append(entry)

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """EarlyStopping whose counters (and best weights) survive a restart."""

        def __init__(self, *args, resume: dict | None = None, best_weights=None, **kwargs):
            super().__init__(*args, **kwargs)
            self._resume, self._resume_weights = resume, best_weights

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self._resume:
                self.wait = self._resume["wait"]
                self.best = self._resume["best"]
                self.best_epoch = self._resume["best_epoch"]
                self.best_weights = self._resume_weights

        def state(self) -> dict:
            best = None if self.best is None else float(self.best)
            return {"wait": int(self.wait), "best": best, "best_epoch": int(self.best_epoch)}

    class ResumableReduceLROnPlateau(keras.callbacks.ReduceLROnPlateau):
        """ReduceLROnPlateau whose counters survive a restart."""

        def __init__(self, *args, resume: dict | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self._resume = resume

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if self._resume:
                self.best = self._resume["best"]
                self.wait = self._resume["wait"]
                self.cooldown_counter = self._resume["cooldown_counter"]

        def state(self) -> dict:
            best = None if self.best is None else float(self.best)
            return {"best": best, "wait": int(self.wait), "cooldown_counter": self.cooldown_counter}

    class InverseTimeDecay(keras.callbacks.Callback):
        """The paper's Keras `decay`: lr = base / (1 + decay * step), every step.

        A plain callback (not a schedule) so ReduceLROnPlateau can still lower the
        rate: a reduction it makes is folded into `base` at the next epoch.
        """

        def __init__(self, decay: float, base: float, last_set: float | None = None):
            super().__init__()
            self.decay, self.base, self.last_set = decay, base, last_set

        def on_train_begin(self, logs=None):
            self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))

        def on_epoch_begin(self, epoch, logs=None):
            current = _lr(self.model)
            if self.last_set and not math.isclose(current, self.last_set, rel_tol=1e-4):
                self.base *= current / self.last_set

        def on_train_batch_begin(self, batch, logs=None):
            self.last_set = self.base / (1.0 + self.decay * self.step)
            self.model.optimizer.learning_rate = self.last_set

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1

        def state(self) -> dict:
            return {"base": self.base, "last_set": self.last_set}

    class Checkpointer(keras.callbacks.Callback):
        """After every epoch: model + optimizer, callback state and history (runs last)."""

        def __init__(self, save):
            super().__init__()
            self.save = save

        def on_epoch_end(self, epoch, logs=None):
            self.save(epoch)

    return (
        EpochRecorder,
        ResumableEarlyStopping,
        ResumableReduceLROnPlateau,
        InverseTimeDecay,
        Checkpointer,
    )


# -------------------------------------------------------------------- checkpoints


class CheckpointStore:
    """checkpoints/ in the output folder, optionally mirrored to an s3:// prefix."""

    def __init__(self, directory: Path, remote: str | None = None) -> None:
        self.dir = directory
        self.remote = remote.rstrip("/") if remote else None
        self.dir.mkdir(parents=True, exist_ok=True)

    def load_state(self) -> dict | None:
        local = self.dir / STATE_FILE
        if not local.is_file() and self.remote:
            from fauna import storage

            if storage.exists(f"{self.remote}/{STATE_FILE}"):
                log.info(f"fetching the checkpoint from {self.remote}")
                for name in (CHECKPOINT_FILE, BEST_WEIGHTS_FILE, STATE_FILE):
                    if storage.exists(f"{self.remote}/{name}"):
                        storage.download_file(f"{self.remote}/{name}", self.dir / name)
        return json.loads(local.read_text()) if local.is_file() else None

    def save(self, model, state: dict, best_weights: list | None) -> None:
        """Model first, state last (renamed into place), so a kill never leaves a torn pair."""
        import numpy as np

        tmp_model = self.dir / f"tmp-{CHECKPOINT_FILE}"
        model.save(tmp_model)
        tmp_model.replace(self.dir / CHECKPOINT_FILE)
        if best_weights is not None:
            tmp_best = self.dir / f"tmp-{BEST_WEIGHTS_FILE}"
            with tmp_best.open("wb") as fh:
                np.savez(fh, *best_weights)
            tmp_best.replace(self.dir / BEST_WEIGHTS_FILE)
        self.write_state(state, mirror=False)
        if self.remote:
            from fauna import storage

            storage.upload_file(self.dir / CHECKPOINT_FILE, f"{self.remote}/{CHECKPOINT_FILE}")
            if best_weights is not None:
                storage.upload_file(
                    self.dir / BEST_WEIGHTS_FILE, f"{self.remote}/{BEST_WEIGHTS_FILE}"
                )
            storage.upload_file(self.dir / STATE_FILE, f"{self.remote}/{STATE_FILE}")

    def write_state(self, state: dict, mirror: bool = True) -> None:
        tmp_state = self.dir / f"tmp-{STATE_FILE}"
        tmp_state.write_text(json.dumps(state, indent=1))
        tmp_state.replace(self.dir / STATE_FILE)
        if self.remote and mirror:
            from fauna import storage

            storage.upload_file(self.dir / STATE_FILE, f"{self.remote}/{STATE_FILE}")

    def load_model(self):
        from fauna.model import load_model

        return load_model(str(self.dir / CHECKPOINT_FILE), compile=True)

    def load_best_weights(self) -> list | None:
        import numpy as np

        path = self.dir / BEST_WEIGHTS_FILE
        if not path.is_file():
            return None
        with np.load(path) as npz:
            return [npz[f"arr_{i}"] for i in range(len(npz.files))]

    def clear_heavy_files(self) -> None:
        """After success only state.json stays (small: the history and a 'complete' flag)."""
        for name in (CHECKPOINT_FILE, BEST_WEIGHTS_FILE):
            (self.dir / name).unlink(missing_ok=True)


# ----------------------------------------------------------------------- training


def _fingerprint(backbone: str, bcfg: BackboneTrainConfig, cfg: TrainConfig, extra: dict) -> str:
    common = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(TrainConfig)
        if f.name not in {x.name for x in dataclasses.fields(BackboneTrainConfig)}
        and f.name not in ("backbones", "overrides")
    }
    blob = json.dumps(
        {"backbone": backbone, "settings": dataclasses.asdict(bcfg), **common, **extra},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _metrics():
    import keras

    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.TopKCategoricalAccuracy(k=3, name="top3_accuracy"),
        keras.metrics.AUC(name="auc"),
        keras.metrics.F1Score(average="macro", name="macro_f1"),
    ]


def compile_for_phase(model, phase: Phase, pretrained: bool) -> None:
    import keras

    from fauna.model import set_trainable

    set_trainable(model, phase.fine_tune_layers, freeze_batchnorm=pretrained)
    model.compile(
        optimizer=keras.optimizers.Adam(phase.learning_rate),
        loss="categorical_crossentropy",
        metrics=_metrics(),
    )


def _policy(cfg: TrainConfig) -> str:
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    return "mixed_float16" if gpu and cfg.mixed_precision else "float32"


def train_backbone(
    data: Path,
    out: Path,
    backbone: str,
    cfg: TrainConfig,
    *,
    epochs: int | None = None,
    checkpoint_uri: str | None = None,
    extra_callbacks: Sequence[Any] = (),
    export: bool = True,
) -> TrainResult:
    """Train `backbone` on the split dataset `data` into `out`; resumes from out/checkpoints.

    epochs: total epochs over both phases (see `with_total_epochs`); None = the config's.
    checkpoint_uri: an s3:// prefix mirroring the checkpoint, for pods that lose `out`.
    extra_callbacks: run after the checkpoint each epoch (tests use one to simulate a kill).
    export: write the TF Serving SavedModel too (tests skip it where it only costs time).
    """
    import keras

    from fauna.backbones import check_input_size, get_backbone

    data, out = Path(data), Path(out)
    spec = get_backbone(backbone)
    bcfg = cfg.for_backbone(spec.name)
    if epochs is not None:
        bcfg = with_total_epochs(bcfg, epochs)
    dataset = load_training_data(data)
    check_input_size(spec, dataset.image_size)
    policy = _policy(cfg)
    source = read_json(data / SOURCE) if (data / SOURCE).is_file() else {}
    fingerprint = _fingerprint(
        spec.name,
        bcfg,
        cfg,
        {
            "policy": policy,
            "classes": dataset.classes,
            "image_size": dataset.image_size,
            "data_version": source.get("version", ""),
            "train_images": dataset.train_images,
            "val_images": dataset.val_images,
        },
    )
    out.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(out / CHECKPOINTS, checkpoint_uri)
    state = store.load_state()
    if state and state.get("fingerprint") != fingerprint:
        raise TrainError(
            f"{out} holds a checkpoint of a different training run (other backbone, settings or "
            "data): use a new output folder, or delete its checkpoints/ to start over"
        )
    if state and state.get("complete"):
        if not (out / TRAIN_INFO).is_file():
            raise TrainError(
                f"the checkpoint says this training finished, but {out} lacks its outputs: "
                "use a new output folder (and checkpoint URI) to train again"
            )
        log.info(f"{spec.name} is already trained in {out}: nothing to do")
        return _result_from_disk(out)

    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        job = _Job(
            spec.name, data, out, bcfg, cfg, dataset, store, fingerprint, policy, source, export
        )
        return _train(job, state, list(extra_callbacks))
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


@dataclass
class _Job:
    """What one training run works with (so helpers take one argument, not twelve)."""

    name: str
    data: Path
    out: Path
    bcfg: BackboneTrainConfig
    cfg: TrainConfig
    dataset: TrainingData
    store: CheckpointStore
    fingerprint: str
    policy: str
    source: dict
    export: bool


def _lr(model) -> float:
    import keras

    return float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))


def _batches(images: int, bcfg: BackboneTrainConfig) -> int:
    return math.ceil(images / bcfg.batch_size)


def _train(job: _Job, state: dict | None, extra_callbacks: list) -> TrainResult:
    import keras
    import tensorflow as tf

    from fauna.backbones import is_pretrained
    from fauna.inputs import make_dataset
    from fauna.model import build_model

    name, bcfg, cfg, dataset, store = job.name, job.bcfg, job.cfg, job.dataset, job.store
    recorder_cls, stopper_cls, plateau_cls, decay_cls, checkpointer_cls = _callbacks_module()
    keras.utils.set_random_seed(cfg.seed)
    num_classes = len(dataset.classes)
    run_id = uuid.uuid4().hex[:8]
    # Known lengths: Keras then shows real progress and never warns about running out.
    train_ds = make_dataset(
        dataset.train_dir,
        dataset.image_size,
        num_classes,
        bcfg.batch_size,
        training=True,
        augment=dataset.augment,
        seed=cfg.seed,
    ).apply(tf.data.experimental.assert_cardinality(_batches(dataset.train_images, bcfg)))
    val_ds = None
    if dataset.val_dir:
        val_ds = make_dataset(
            dataset.val_dir, dataset.image_size, num_classes, bcfg.batch_size
        ).apply(tf.data.experimental.assert_cardinality(_batches(dataset.val_images, bcfg)))
    monitor = "val_loss" if val_ds is not None else "loss"
    class_weight = balanced_class_weights(dataset.class_counts) if cfg.class_weights else None

    if state:
        log.info(
            f"resuming {name} after epoch {state['epoch'] + 1} "
            f"({state['phase']}{', phase done' if state['phase_done'] else ''})"
        )
        model = store.load_model()
        history: list[dict] = [h for h in state["history"] if h["epoch"] <= state["epoch"]]
    else:
        log.info(
            f"training {name} ({bcfg.weights} weights, {dataset.image_size} px, {job.policy}): "
            f"{dataset.train_images} train images, {num_classes} classes, "
            f"{bcfg.head_epochs} head + {bcfg.fine_tune_epochs} fine-tune epochs"
        )
        model = build_model(name, dataset.image_size, num_classes, bcfg, bcfg.weights)
        history = []
    _write_history(job.out, history)

    pretrained = is_pretrained(bcfg.weights)
    resume = state
    phases = [p for p in plan_phases(bcfg) if p.end > p.start]
    for phase in phases:
        index = PHASES.index(phase.name)
        initial_epoch = phase.start
        stop_state = plateau_state = decay_state = best_weights = None
        if resume:
            done = PHASES.index(resume["phase"])
            if index < done or (index == done and resume["phase_done"]):
                continue
            if index == done:  # mid-phase: the checkpoint is compiled for this phase
                initial_epoch = phase.end if resume.get("stopping") else resume["epoch"] + 1
                stop_state, plateau_state = resume["early_stopping"], resume["reduce_lr"]
                decay_state = resume.get("decay")
                best_weights = store.load_best_weights()
                model.optimizer.learning_rate = resume["lr"]
            else:
                compile_for_phase(model, phase, pretrained)
            resume = None
        else:
            compile_for_phase(model, phase, pretrained)

        stopper = stopper_cls(
            monitor=monitor,
            patience=cfg.early_stopping_patience,
            restore_best_weights=True,
            resume=stop_state,
            best_weights=best_weights,
        )
        plateau = plateau_cls(
            monitor=monitor,
            factor=cfg.reduce_lr_factor,
            patience=cfg.reduce_lr_patience,
            resume=plateau_state,
        )
        callbacks: list = [recorder_cls(history, phase.name, run_id, dataset.train_images)]
        decay = None
        if bcfg.decay:
            decay = decay_cls(
                bcfg.decay,
                (decay_state or {}).get("base", phase.learning_rate),
                (decay_state or {}).get("last_set"),
            )
            callbacks.append(decay)
        callbacks += [stopper, plateau]

        def save(epoch: int, phase: Phase = phase, stopper=stopper, plateau=plateau, decay=decay):
            improved = stopper.best_weights is not None and stopper.best_epoch == epoch
            store.save(
                model,
                {
                    "fingerprint": job.fingerprint,
                    "phase": phase.name,
                    "epoch": epoch,
                    "phase_done": False,
                    "stopping": bool(model.stop_training),
                    "lr": _lr(model),
                    "early_stopping": stopper.state(),
                    "reduce_lr": plateau.state(),
                    "decay": decay.state() if decay else None,
                    "history": history,
                    "complete": False,
                },
                stopper.best_weights if improved else None,
            )
            _write_history(job.out, history)

        callbacks.append(checkpointer_cls(save))
        callbacks += extra_callbacks

        log.info(
            f"{phase.name}: epochs {initial_epoch + 1}..{phase.end}, lr {phase.learning_rate:g}"
        )
        if initial_epoch < phase.end:
            model.fit(
                train_ds,
                validation_data=val_ds,
                epochs=phase.end,
                initial_epoch=initial_epoch,
                class_weight=class_weight,
                callbacks=callbacks,
                shuffle=False,  # the tf.data pipeline shuffles
                verbose=2,
            )
        elif best_weights is not None:  # stopped early just before the kill
            model.set_weights(best_weights)
        if phase is phases[-1]:
            break  # the deliverables come next; a kill before them resumes from the checkpoint
        last_epoch = history[-1]["epoch"] if history else phase.start - 1
        store.save(
            model,
            {
                "fingerprint": job.fingerprint,
                "phase": phase.name,
                "epoch": last_epoch,
                "phase_done": True,
                "history": history,
                "complete": False,
            },
            None,
        )

    return _finish(job, model, history)


def _finish(job: _Job, model, history: list[dict]) -> TrainResult:
    """Write the deliverables: the model without optimizer state, the export, the records."""
    import keras

    from fauna.model import count_params

    name, data, out, cfg, dataset = job.name, job.data, job.out, job.cfg, job.dataset

    # A fresh, uncompiled copy: model.keras carries no optimizer state (a third of the size).
    final = keras.Model.from_config(model.get_config())
    final.set_weights(model.get_weights())
    final.save(out / MODEL_FILE)
    if (out / EXPORT_DIR).exists():
        shutil.rmtree(out / EXPORT_DIR)
    if job.export:
        serving = out / EXPORT_DIR / SERVING_VERSION
        final.export(str(serving), format="tf_saved_model", verbose=False)
    carry_forward((CLASSES, PREPROCESS_INFO, SOURCE, AUGMENT_INFO), [data], out)
    _write_history(out, history)
    plot_history(history, out / HISTORY_PNG, f"{name}: training history")

    train_seconds = sum(h["train_seconds"] for h in history)
    images = sum(h["images"] for h in history)
    # The weights kept are EarlyStopping's best of the last phase that ran.
    last_phase = [h for h in history if h["phase"] == history[-1]["phase"]] if history else []
    best = min(last_phase, key=lambda h: h.get("val_loss", h["loss"]), default={"epoch": None})
    params = count_params(model)
    info = {
        "backbone": name,
        "weights": job.bcfg.weights,
        "image_size": dataset.image_size,
        "num_classes": len(dataset.classes),
        "epochs_run": len(history),
        "train_seconds": round(train_seconds, 3),
        "images_per_second": round(images / train_seconds, 3) if train_seconds else 0.0,
        "params": params["total"],
        "trainable_params": params["trainable"],
        "train_images": dataset.train_images,
        "val_images": dataset.val_images,
        "best_epoch": best["epoch"],
        "policy": job.policy,
        "runs": len({h["run_id"] for h in history}),
        "synthetic": bool(job.source.get("synthetic", False)),
        "config": dataclasses.asdict(job.bcfg),
        "settings": {
            "early_stopping_patience": cfg.early_stopping_patience,
            "reduce_lr_factor": cfg.reduce_lr_factor,
            "reduce_lr_patience": cfg.reduce_lr_patience,
            "class_weights": cfg.class_weights,
            "augment": dataclasses.asdict(dataset.augment) if dataset.augment else None,
            "seed": cfg.seed,
        },
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(out / TRAIN_INFO, info)
    job.store.write_state(
        {
            "fingerprint": job.fingerprint,
            "phase": PHASES[-1],
            "epoch": len(history) - 1,
            "phase_done": True,
            "history": history,
            "complete": True,
        },
        # The S3 copy keeps the last epoch's state: a pod retried after this point (its
        # outputs lost in upload) resumes at the end and writes the deliverables again.
        mirror=False,
    )
    job.store.clear_heavy_files()
    log.info(
        f"{name}: {len(history)} epochs in {train_seconds:.1f} s "
        f"({info['images_per_second']:.1f} images/s) -> {out}"
    )
    return _result_from_disk(out)


def _result_from_disk(out: Path) -> TrainResult:
    info = read_json(out / TRAIN_INFO)
    history = read_json(out / HISTORY_JSON)
    return TrainResult(
        backbone=info["backbone"],
        model_dir=out,
        epochs_run=info["epochs_run"],
        train_seconds=info["train_seconds"],
        images_per_second=info["images_per_second"],
        history=history,
        runs=info.get("runs", 1),
    )


# ------------------------------------------------------------------------ history


def _write_history(out: Path, history: list[dict]) -> None:
    import csv

    write_json(out / HISTORY_JSON, history)
    columns: list[str] = []
    for entry in history:
        columns += [k for k in entry if k not in columns]
    with (out / HISTORY_CSV).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument("--data", required=True, type=Path, help="split (+augment) dataset folder")
    parser.add_argument("--backbone", required=True, help="vgg16, resnet50, inceptionv3, ...")
    parser.add_argument("--out", required=True, type=Path, help="model output folder")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="total epochs over both phases, split in the configured proportion "
        "(at least 1 head epoch; the rest fine-tunes)",
    )
    parser.add_argument(
        "--checkpoint-uri",
        default=None,
        help="s3:// prefix that mirrors the per-epoch checkpoint (resume on another machine)",
    )


def run(args: Any, cfg: Config) -> int:
    result = train_backbone(
        args.data,
        args.out,
        args.backbone,
        cfg.train,
        epochs=args.epochs,
        checkpoint_uri=args.checkpoint_uri,
    )
    final = result.final
    shown = ", ".join(
        f"{k}={final[k]:.4f}" for k in ("val_loss", "val_accuracy", "val_macro_f1") if k in final
    )
    print(
        f"{result.backbone}: {result.epochs_run} epochs, {result.train_seconds:.1f} s, "
        f"{result.images_per_second:.1f} images/s; last epoch {shown} -> {result.model_dir}"
    )
    return 0
