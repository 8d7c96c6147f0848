"""`fauna train`: train one backbone on a split (or augment) output; resumable.

The recipe depends on the start (fauna.training.recipe): with pretrained weights the
paper's two phases (head, then fine-tuning); from random weights (`weights: none`)
one phase training every layer. Every epoch ends with a checkpoint (model and state
as one unit) beside `--out` (`.<out>.checkpoints/`, or `--checkpoint-dir`) and, with
`--checkpoint-uri`, in S3: run the same command again after a crash or preemption
and it continues after the last completed epoch. The model folder appears only when
training succeeded (fauna.step_output.step_output); the local checkpoints are removed then.

Output folder (fauna.model.artifact): model.keras, export/1/ (SavedModel for TF Serving),
classes.json, preprocess.json, source.json, augment.json, history.json/.csv/.png,
train_info.json.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fauna.config import BackboneTrainConfig, Config, TrainConfig
from fauna.contracts import DATA_STEPS, TRAIN_STEP, SourceInfo
from fauna.model.artifact import model_info
from fauna.step_output import read_marker, require_output, step_output
from fauna.training import Diverged, TrainError
from fauna.training.checkpoints import CheckpointStore
from fauna.training.deliverables import TrainResult, write_outputs
from fauna.training.distribute import for_replicas, training_strategy
from fauna.training.recipe import plan_recipe, with_total_epochs
from fauna.training.trainset import TrainingData, load_training_data

log = logging.getLogger(__name__)

STEP = TRAIN_STEP

__all__ = ["TrainError", "TrainResult", "default_checkpoint_dir", "train_backbone"]


def default_checkpoint_dir(out: Path) -> Path:
    """`.<name>.checkpoints` beside the output folder: outlives a crash, hidden from globs."""
    out = Path(out).absolute()
    return out.parent / f".{out.name}.checkpoints"


def train_backbone(
    data: Path,
    out: Path,
    backbone: str,
    cfg: TrainConfig,
    *,
    epochs: int | None = None,
    checkpoint_uri: str | None = None,
    checkpoint_dir: Path | None = None,
    extra_callbacks: Sequence[Any] = (),
    export: bool = True,
) -> TrainResult:
    """Train `backbone` on the dataset `data` into `out`, resuming from its checkpoints.

    epochs: total epochs over the recipe's phases (see `with_total_epochs`); None = config's.
    checkpoint_uri: an s3:// prefix mirroring the checkpoints, for pods that lose their disk.
    extra_callbacks: run after the checkpoint each epoch (tests use one to simulate a kill).
    export: write the TF Serving SavedModel too (tests skip it where it only costs time).
    """
    from fauna.model import backbones

    data, out = Path(data), Path(out)
    require_output(data, DATA_STEPS)
    if checkpoint_uri:
        from fauna.store import storage

        storage.check_access(checkpoint_uri, write=True)  # before epoch 1, not after it
    spec = backbones.get_backbone(backbone)
    backbones.check_names(cfg.overrides, "train.overrides")
    bcfg = cfg.for_backbone(spec.name)
    if epochs is not None:
        bcfg = with_total_epochs(bcfg, epochs)
    backbones.check_preprocessing(spec)
    dataset = load_training_data(data)
    backbones.check_input_size(spec, dataset.image_size)
    log.info("%s", effective_settings(spec.name, cfg, bcfg))  # once every check has passed
    strategy = training_strategy()  # several devices: one replica each, batch and rates scaled
    bcfg, dataset = for_replicas(bcfg, dataset, strategy.num_replicas_in_sync)
    policy = _policy(cfg)
    fingerprint = _fingerprint(spec.name, bcfg, cfg, dataset, policy, data)
    if _already_trained(out, fingerprint):
        log.info("%s is already trained in %s: nothing to do", spec.name, out)
        return TrainResult.from_folder(out)
    checkpoints = checkpoint_dir or default_checkpoint_dir(out)
    store = CheckpointStore(checkpoints, checkpoint_uri, fingerprint)
    recipe = plan_recipe(bcfg, dataset.steps_per_epoch(bcfg.batch_size))
    with _precision(policy), strategy.scope(), step_output(out, STEP) as folder:
        from fauna.training.loop import Job, run_training

        job = Job(spec.name, bcfg, cfg, dataset, recipe, store, fingerprint, policy)
        try:
            model, history = run_training(job, store.latest(), extra_callbacks)
            write_outputs(job, model, history, data, folder, export)
        except Diverged:
            store.discard()
            raise
    store.finish()
    result = TrainResult.from_folder(out)
    log.info("%s", result.summary())  # the step's one summary line
    return result


def effective_settings(name: str, cfg: TrainConfig, bcfg: BackboneTrainConfig) -> str:
    """One line: every setting this backbone trains with; `*` marks a per-backbone one."""
    own = cfg.overrides.get(name, {})
    pairs = " ".join(
        f"{key}={_show(value)}{'*' if key in own else ''}"
        for key, value in dataclasses.asdict(bcfg).items()
    )
    note = f" (* from train.overrides.{name})" if own else ""
    return f"{name} settings: {pairs}{note}"


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def fetch_data(uri: str) -> Path:
    """An s3:// split or augment output, downloaded once into the cache (a Katib trial)."""
    import shutil
    import tempfile

    from fauna.model.backbones import cache_dir
    from fauna.store import storage

    target = cache_dir("data") / hashlib.sha256(uri.encode()).hexdigest()[:16]
    if read_marker(target) is not None:
        return target
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        storage.download_dir(uri, staging)
        shutil.rmtree(target, ignore_errors=True)
        staging.replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _already_trained(out: Path, fingerprint: str) -> bool:
    """A completed train output of exactly this run (a rerun, or a retried task)."""
    marker = read_marker(out) if out.is_dir() else None
    return bool(
        marker and marker.get("step") == STEP and model_info(out).get("fingerprint") == fingerprint
    )


def _fingerprint(
    backbone: str,
    bcfg: BackboneTrainConfig,
    cfg: TrainConfig,
    dataset: TrainingData,
    policy: str,
    data: Path,
) -> str:
    """What makes two training runs the same run (checkpoints of another are refused)."""
    per_backbone = {f.name for f in dataclasses.fields(BackboneTrainConfig)}
    common = {
        f.name: getattr(cfg, f.name)
        for f in dataclasses.fields(TrainConfig)
        # head_features_once: the same model either way (a resumed run may switch it)
        if f.name not in per_backbone
        and f.name not in ("backbones", "overrides", "head_features_once")
    }
    if not cfg.head_feature_views:  # views change the run; 0 keeps the fingerprints it had
        del common["head_feature_views"]
    source = SourceInfo.read_first(data) or SourceInfo()
    blob = json.dumps(
        {
            "backbone": backbone,
            "settings": dataclasses.asdict(bcfg),
            **common,
            "policy": policy,
            "classes": dataset.classes,
            "image_size": dataset.image_size,
            "data_version": source.rest.get("version", ""),
            "train_images": dataset.train_images,
            "val_images": dataset.val_images,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _policy(cfg: TrainConfig) -> str:
    import tensorflow as tf

    gpu = bool(tf.config.list_physical_devices("GPU"))
    if not gpu:  # the GPU image on a node without one: say so, then train anyway
        log.info("no GPU found: training on the CPU (float32)")
    return "mixed_float16" if gpu and cfg.mixed_precision else "float32"


@contextmanager
def _precision(policy: str) -> Iterator[None]:
    import keras

    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--data", required=True, help="split or augment output folder, or an s3:// prefix of one"
    )
    parser.add_argument(
        "--backbone",
        required=True,
        help="vgg16, resnet50, inceptionv3 (the paper's) or any keras.applications model, "
        "e.g. efficientnetv2b0 (an unknown name lists them all)",
    )
    parser.add_argument("--out", required=True, type=Path, help="model output folder")
    parser.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="total epochs; with pretrained weights split between the phases in the "
        "configured proportion (at least 1 head epoch; the rest fine-tunes)",
    )
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        default=None,
        help="folder for the per-epoch checkpoints (default: .<out>.checkpoints beside --out)",
    )
    parser.add_argument(
        "--checkpoint-uri",
        default=None,
        help="s3:// prefix that mirrors the per-epoch checkpoints (resume on another machine)",
    )


def run(args: Any, cfg: Config) -> int:
    data = fetch_data(args.data) if args.data.startswith("s3://") else Path(args.data)
    train_backbone(  # logs the settings, one line per epoch and the summary
        data,
        args.out,
        args.backbone,
        cfg.train,
        epochs=args.epochs,
        checkpoint_uri=args.checkpoint_uri,
        checkpoint_dir=args.checkpoint_dir,
    )
    return 0
