"""Benchmark (not a test): where one smoke-profile training spends its time.

Runs `fauna.steps.train.train_backbone` (the real training code, checkpoints and all) on a
split/augment output, in this process, and prints one JSON line: seconds per epoch (fit's
own epochs, validation included), per checkpoint save, and per part of train's data out
(BatchNorm recalibration + inference copy, the finite check, model.keras, the SavedModel
export, the history plot), with the kept epoch's metrics. One backbone per process, so
A/B runs can alternate in fresh processes under the same load:

    python bench/bench_smoke_train.py --data /tmp/smk/aug --backbone resnet50 --epochs 2 \\
        --set train.jit_compile=true
    python bench/bench_smoke_train.py ... --threads 1      # tf.config.threading intra/inter

Settings: the smoke profile plus `--set`s. The output goes to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SPENT: dict[str, float] = defaultdict(float)  # wall seconds
CPU: dict[str, float] = defaultdict(float)  # process CPU seconds


def timed(owner, name: str, label: str) -> None:
    """Wrap owner.name so its seconds add up under `label`."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        start, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            SPENT[label] += time.perf_counter() - start
            CPU[label] += time.process_time() - cpu

    setattr(owner, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--jit", choices=("auto", "true", "false"), default="auto")
    parser.add_argument(
        "--steps-per-epoch", type=int, default=0, help="cut each epoch (and validation) short"
    )
    parser.add_argument("--threads", type=int, default=0, help="intra/inter op threads (0: TF's)")
    args = parser.parse_args()

    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from fauna.config import load_config, parse_override
    from fauna.plots import plot_history
    from fauna.steps.train import train_backbone
    from fauna.training import checkpoints, deliverables

    if args.jit != "auto":
        compile_model = keras.Model.compile

        def forced(self, *a, **kw):
            kw["jit_compile"] = args.jit == "true"
            return compile_model(self, *a, **kw)

        keras.Model.compile = forced
    if args.steps_per_epoch:  # data out and checkpoints at full cost, epochs cut short
        fit = keras.Model.fit

        def short(self, *a, **kw):
            kw.update(steps_per_epoch=args.steps_per_epoch, validation_steps=1)
            return fit(self, *a, **kw)

        keras.Model.fit = short
    cfg = load_config(None, "smoke", dict(parse_override(o) for o in args.overrides))
    timed(deliverables, "inference_model", "recalibrate+copy")
    timed(deliverables, "check_finite", "finite_check")
    timed(checkpoints.CheckpointStore, "save", "checkpoints")
    timed(keras.Model, "export", "savedmodel_export")
    import fauna.plots

    fauna.plots.plot_history = plot_history
    timed(fauna.plots, "plot_history", "history_plot")

    epochs: list[float] = []
    cpu: list[float] = []  # process CPU seconds (user + system): less sensitive to load

    class Clock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            epochs.append(time.perf_counter() - self.start)
            cpu.append(time.process_time() - self.cpu)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = train_backbone(
            args.data, Path(tmp) / args.backbone, args.backbone, cfg.train,
            epochs=args.epochs, extra_callbacks=[Clock()],
        )  # fmt: skip
        total = time.perf_counter() - start
    kept = result.kept
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "overrides": args.overrides,
                "threads": args.threads,
                # Epoch seconds include the checkpoint save (a callback) and validation.
                "epoch_s": [round(e, 1) for e in epochs],
                "epoch_cpu_s": [round(c, 1) for c in cpu],
                "parts_s": {k: round(v, 1) for k, v in SPENT.items()},
                "parts_cpu_s": {k: round(v, 1) for k, v in CPU.items()},
                "total_s": round(total, 1),
                "jit": args.jit,
                "val_accuracy": kept.get("val_accuracy"),
                "val_loss": kept.get("val_loss"),
                "load": os.getloadavg()[0],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
