"""Benchmark (not a test): XLA (`jit_compile`) on the CPU for the smoke profile's training.

One backbone, one setting per process (run the two settings side by side, so they share
the machine's load): the smoke recipe (from random weights, 80 px, batch 16, the scratch
phase's compile: Adam, the metrics) fitting in-memory synthetic images. Prints one JSON
line: process CPU seconds and wall seconds of the first `--warmup` steps (tracing and, with
XLA, compiling) and of the `--steps` after them, and the loss after all of them (same seed,
same batches: the two settings should learn the same).

    python bench/bench_xla.py --backbone resnet50 --jit true & \\
    python bench/bench_xla.py --backbone resnet50 --jit false; wait
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--jit", choices=("true", "false"), default="false")
    parser.add_argument("--image-size", type=int, default=80)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--policy", default="float32", help="dtype policy: mixed_bfloat16")
    parser.add_argument("--threads", type=int, default=0, help="intra/inter op threads (0: TF's)")
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import keras

    from fauna.config import load_config
    from fauna.data.synthetic import class_image
    from fauna.model.network import build_model, limit_batchnorm_momentum, set_trainable
    from fauna.training.recipe import LOSS, metrics, plan_recipe

    cfg = load_config(None, "smoke", {})
    bcfg = cfg.train.for_backbone(args.backbone)
    batch, size, classes = bcfg.batch_size, args.image_size, 30
    rng = random.Random(0)
    labels = [i % classes for i in range(batch * 4)]
    images = np.stack([np.asarray(class_image(c, classes, (size, size), rng)) for c in labels])
    onehot = keras.utils.to_categorical(labels, classes)
    data = tf.data.Dataset.from_tensor_slices((images.astype("float32"), onehot))
    data = data.batch(batch, drop_remainder=True).repeat()

    keras.mixed_precision.set_global_policy(args.policy)
    keras.utils.set_random_seed(cfg.train.seed)
    recipe = plan_recipe(bcfg, args.warmup + args.steps)
    model = build_model(args.backbone, size, classes, bcfg, "none", normalize_features=True)
    limit_batchnorm_momentum(model, recipe.batchnorm_momentum)
    phase = recipe.phases[0]
    set_trainable(model, phase.trainable_layers, freeze_batchnorm=recipe.freeze_batchnorm)
    model.compile(
        optimizer=keras.optimizers.Adam(phase.learning_rate),
        loss=LOSS,
        metrics=metrics(),
        jit_compile=args.jit == "true",
    )
    marks: list[tuple[float, float]] = []

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            marks.append((time.process_time(), time.perf_counter()))

        def on_train_batch_end(self, step, logs=None):
            if step + 1 in (args.warmup, args.warmup + args.steps):
                float(keras.ops.convert_to_numpy(logs["loss"]))  # waits for the step
                marks.append((time.process_time(), time.perf_counter()))

    history = model.fit(
        data,
        steps_per_epoch=args.warmup + args.steps,
        epochs=1,
        callbacks=[Clock()],
        verbose=0,
    )
    start = (time.process_time(), time.perf_counter())
    model.evaluate(data, steps=4, verbose=0)  # validation: its own (jit) function
    end = (time.process_time(), time.perf_counter())
    (c0, w0), (c1, w1), (c2, w2) = marks
    print(
        json.dumps(
            {
                "backbone": args.backbone,
                "jit": args.jit,
                "threads": args.threads,
                "policy": args.policy,
                "warmup_cpu_s": round(c1 - c0, 2),
                "warmup_wall_s": round(w1 - w0, 2),
                "step_cpu_s": round((c2 - c1) / args.steps, 3),
                "step_wall_s": round((w2 - w1) / args.steps, 3),
                "eval4_cpu_s": round(end[0] - start[0], 2),
                "loss": round(float(history.history["loss"][-1]), 4),
                "load": round(os.getloadavg()[0], 1),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
