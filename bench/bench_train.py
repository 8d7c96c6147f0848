"""Benchmark (not a test): is the tf.data input pipeline ever the training bottleneck?

For each backbone and training phase (head: backbone frozen; fine_tune: the
configured top layers trainable), the same compiled model trains
  - fed by the real pipeline: fauna.data.input_pipeline.make_dataset over JPEG TFRecord shards
    (parallel decode, train-time augmentation, batching, prefetch), and
  - fed from in-memory tensors: one batch of the same shape, already decoded,
    repeated (the upper bound any input pipeline can reach),
with the same batch size and the same number of steps, after warm-up steps
(tracing, autotuning), timed at steady state. The ratio pipeline/in-memory is
the figure of merit: >= 0.95 means the input pipeline costs under 5%.

Settings come from the one config (batch size per backbone, augmentation, mixed
precision when a GPU is present); weights are random ("none"): speed does not
depend on their values. On a CPU-only machine the pipeline shares the cores with
the model, so ratios there understate what a GPU node sees.

    python bench/bench_train.py                                   # paper backbones, 128 px
    python bench/bench_train.py --backbones vgg16 --image-size 75 --steps 10 --warmup 3
    python bench/bench_train.py --image-size 224 --set train.batch_size=32 --json out.json

`--head-epochs N`: instead, the head phase (no augmentation) as training runs it, N epochs
over the shards, recomputing the frozen backbone every epoch against computing its
features once (fauna.training.features; the extraction counted in the time):
    python bench/bench_train.py --head-epochs 3 --images 256 --image-size 75
With `--head-views K` both sides augment (the config's augment settings): the backbone
every epoch on freshly augmented images against K augmented views computed once
(train.head_feature_views):
    python bench/bench_train.py --head-epochs 3 --head-views 3 --images 256 --image-size 75
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CACHE = Path(tempfile.gettempdir()) / "fauna-bench-train"
NUM_CLASSES = 30


def make_shards(image_size: int, images: int) -> Path:
    """`images` synthetic JPEGs (30 classes) at the training size, as train shards (cached)."""
    from fauna.data.records import Record, ShardWriter
    from fauna.data.synthetic import class_image

    directory = CACHE / f"{image_size}px-{images}"
    if (directory / "DONE").is_file():
        return directory
    rng = random.Random(0)
    with ShardWriter(directory, per_shard=max(1, images // 8)) as writer:
        for i in range(images):
            label = i % NUM_CLASSES
            buffer = io.BytesIO()
            image = class_image(label, NUM_CLASSES, (image_size, image_size), rng)
            image.save(buffer, "JPEG", quality=95, subsampling=0)
            data = buffer.getvalue()
            sha = hashlib.sha256(data).hexdigest()
            writer.write(Record(data, label, f"class{label}", sha, f"{i}.jpg"))
    (directory / "DONE").write_text("")
    return directory


def steady_images_per_second(model, dataset, batch_size: int, warmup: int, steps: int) -> float:
    """Images/s over `steps` training steps that follow `warmup` steps, in one fit() call."""
    import keras

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 in (warmup, warmup + steps):
                # Reading the loss waits for the step to finish on the device.
                float(keras.ops.convert_to_numpy(logs["loss"]))
                setattr(self, "start" if batch + 1 == warmup else "end", time.perf_counter())

    clock = Clock()
    model.fit(
        dataset,
        steps_per_epoch=warmup + steps,
        epochs=1,
        callbacks=[clock],
        shuffle=False,
        verbose=0,
    )
    return steps * batch_size / (clock.end - clock.start)


def bench_backbone(name: str, cfg, image_size: int, shards: Path, args) -> list[dict]:
    import keras
    import tensorflow as tf

    from fauna.data.input_pipeline import make_dataset
    from fauna.model.backbones import get_backbone
    from fauna.model.network import build_model
    from fauna.training.recipe import compile_for_phase, plan_recipe

    spec = get_backbone(name)
    bcfg = cfg.train.for_backbone(spec.name)
    gpu = bool(tf.config.list_physical_devices("GPU"))
    policy = "mixed_float16" if gpu and cfg.train.mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(cfg.train.seed)
    batch = bcfg.batch_size
    pipeline = make_dataset(
        shards,
        image_size,
        NUM_CLASSES,
        batch,
        training=True,
        augment=cfg.augment if cfg.augment.mode != "none" else None,
        seed=cfg.train.seed,
    ).repeat()
    images, labels = next(iter(make_dataset(shards, image_size, NUM_CLASSES, batch)))
    in_memory = tf.data.Dataset.from_tensors((images, labels)).repeat()

    model = build_model(spec.name, image_size, NUM_CLASSES, bcfg, "none")
    rows = []
    # The pretrained recipe's phases (the weights stay random: nothing is downloaded).
    recipe = plan_recipe(dataclasses.replace(bcfg, weights="imagenet"), args.steps)
    for phase in recipe.phases:
        if args.phase not in ("both", phase.name):
            continue
        compile_for_phase(model, phase, recipe)
        best = {"memory": 0.0, "pipeline": 0.0}
        for _ in range(args.repeat):  # interleaved, best of each: fair under noisy neighbours
            for source, dataset in (("memory", in_memory), ("pipeline", pipeline)):
                ips = steady_images_per_second(model, dataset, batch, args.warmup, args.steps)
                best[source] = max(best[source], ips)
        row = {
            "backbone": spec.name,
            "phase": phase.name,
            "image_size": image_size,
            "batch_size": batch,
            "policy": policy,
            "steps": args.steps,
            "memory_images_per_s": round(best["memory"], 1),
            "pipeline_images_per_s": round(best["pipeline"], 1),
            "ratio": round(best["pipeline"] / best["memory"], 3),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    keras.mixed_precision.set_global_policy("float32")
    return rows


def head_phase(name: str, cfg, image_size: int, shards: Path, args) -> dict:
    """Head-phase epochs/s: the backbone every epoch vs its features computed once."""
    import keras
    import tensorflow as tf

    from fauna.data.input_pipeline import make_dataset
    from fauna.model.backbones import get_backbone
    from fauna.model.network import build_model
    from fauna.training import features
    from fauna.training.recipe import LOSS, compile_for_phase, metrics, plan_recipe
    from fauna.training.trainset import TrainingData, class_counts

    spec = get_backbone(name)
    bcfg = cfg.train.for_backbone(spec.name)
    keras.utils.set_random_seed(cfg.train.seed)
    batch, epochs = bcfg.batch_size, args.head_epochs
    counts = class_counts(shards, NUM_CLASSES)
    augment = dataclasses.replace(cfg.augment, mode="augment") if args.head_views else None
    data = TrainingData(
        [str(i) for i in range(NUM_CLASSES)], image_size, shards, None, augment, counts, 0
    )
    model = build_model(spec.name, image_size, NUM_CLASSES, bcfg, "none")
    recipe = plan_recipe(dataclasses.replace(bcfg, weights="imagenet"), data.steps_per_epoch(batch))
    compile_for_phase(model, recipe.phases[0], recipe)
    images = make_dataset(
        shards, image_size, NUM_CLASSES, batch, training=True, augment=augment, seed=1
    )
    images = images.apply(tf.data.experimental.assert_cardinality(data.steps_per_epoch(batch)))
    model.fit(images, epochs=1, verbose=0)  # warm-up: tracing, autotuning
    start = time.perf_counter()
    model.fit(images, epochs=epochs, verbose=0)
    recompute = time.perf_counter() - start

    start = time.perf_counter()
    if args.head_views:
        once = features.extract_views(model, data, batch, args.head_views, 1, None)
        cycle = [features.CycleViews(once)]
    else:
        once, cycle = features.extract(model, shards, data, batch, None), []
    extracted = time.perf_counter() - start
    head = features.head_model(model)
    head.compile(optimizer=model.optimizer, loss=LOSS, metrics=metrics())
    batches = once.dataset(NUM_CLASSES, batch, shuffle_seed=1)
    head.fit(batches, epochs=1, verbose=0, callbacks=cycle)  # warm-up, as above
    start = time.perf_counter()
    head.fit(batches, epochs=epochs, verbose=0, callbacks=cycle)
    on_features = time.perf_counter() - start
    row = {
        "backbone": spec.name,
        "image_size": image_size,
        "images": data.train_images,
        "batch_size": batch,
        "epochs": epochs,
        "views": args.head_views,
        "recompute_epochs_per_s": round(epochs / recompute, 4),
        "extract_s": round(extracted, 2),
        "head_epoch_s": round(on_features / epochs, 4),
        "once_epochs_per_s": round(epochs / (extracted + on_features), 4),
        "speedup": round(recompute / (extracted + on_features), 2),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def print_head_table(rows: list[dict], device: str) -> None:
    print(f"\nhead phase: backbone every epoch vs features once — {device}\n")
    print(
        "| backbone | px | images | epochs | views | every epoch: epochs/s | extraction s "
        "| head s/epoch | once: epochs/s (extraction counted) | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['image_size']} | {r['images']} | {r['epochs']} "
            f"| {r['views'] or '-'} "
            f"| {r['recompute_epochs_per_s']:.3f} | {r['extract_s']:.1f} "
            f"| {r['head_epoch_s']:.3f} | {r['once_epochs_per_s']:.3f} | {r['speedup']:.1f}x |"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbones", help="comma-separated (default: train.backbones)")
    parser.add_argument("--image-size", type=int, help="px (default: preprocess.image_size)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--repeat", type=int, default=2, help="measurements per source (best)")
    parser.add_argument("--phase", choices=("head", "fine_tune", "both"), default="both")
    parser.add_argument("--images", type=int, default=512, help="images in the shards")
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="K=V")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--head-epochs", type=int, default=0, help="head phase: every epoch vs features once"
    )
    parser.add_argument(
        "--head-views", type=int, default=0, help="with --head-epochs: K augmented views"
    )
    args = parser.parse_args()

    import tensorflow as tf

    from fauna.config import load_config, parse_override

    cfg = load_config(overrides=dict(parse_override(o) for o in args.overrides))
    backbones = args.backbones.split(",") if args.backbones else cfg.train.backbones
    args.image_size = args.image_size or cfg.preprocess.image_size
    gpus = tf.config.list_physical_devices("GPU")
    device = (
        tf.config.experimental.get_device_details(gpus[0]).get("device_name", "GPU")
        if gpus
        else f"CPU only ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    )
    print(f"device: {device}; TensorFlow {tf.__version__}", file=sys.stderr)
    shards = make_shards(args.image_size, args.images)
    rows = []
    if args.head_epochs:
        rows = [head_phase(n, cfg, args.image_size, shards, args) for n in backbones]
        print_head_table(rows, device)
        if args.json:
            args.json.write_text(json.dumps({"device": device, "results": rows}, indent=2) + "\n")
        return 0
    for name in backbones:
        rows += bench_backbone(name, cfg, args.image_size, shards, args)

    print(f"\ntraining input pipeline vs in-memory tensors — {device}")
    print(f"{args.image_size} px, {args.steps} timed steps after {args.warmup} warm-up steps\n")
    print("| backbone | phase | batch | policy | in-memory img/s | pipeline img/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['backbone']} | {r['phase']} | {r['batch_size']} | {r['policy']} "
            f"| {r['memory_images_per_s']:.1f} | {r['pipeline_images_per_s']:.1f} "
            f"| {r['ratio']:.2f} |"
        )
    if args.json:
        args.json.write_text(json.dumps({"device": device, "results": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
