"""Benchmark (not a test): does the head phase on features computed once learn the same model?

`train.head_features_once` (docs/training.md) trains the head on the frozen backbone's
features, computed once, instead of running the backbone every epoch. The tests check the
mechanics on tiny data; this runs the real recipe end to end, through the CLI, both ways
and compares what was learned: test top-1 and macro-F1 from `fauna evaluate`, and the time.

ImageNet weights cannot be downloaded here, so a backbone trained elsewhere stands in for
them: `--weights-from` a train output (its model.keras; e.g. a `make local-run` model,
trained from scratch on the generated sample) or a backbone `.weights.h5` file. Its
backbone is saved as a weights file and given to `fauna train --set train.weights=FILE`,
which makes training take the pretrained recipe (head phase, then fine-tuning).

    python bench/bench_head_metrics.py --data <split or augment output> \
        --weights-from runs/<run>/.../train-vgg16 --backbone vgg16 --seeds 1,2

Every training is a fresh `fauna train` process; `--seeds` repeats both ways with another
`train.seed`, which gives the run-to-run spread of each way to compare the gap against.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
FAUNA = [sys.executable, "-m", "fauna.cli"]


def cpu_model() -> str:
    with open("/proc/cpuinfo") as fh:
        return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")


def backbone_weights(source: Path, backbone: str, out: Path) -> Path:
    """A `.weights.h5` of `backbone`'s layers: the file itself, or taken from a train output."""
    if source.is_file() and source.name.endswith(".weights.h5"):
        return source
    import keras

    from fauna.model.artifact import load_model

    model = load_model(source)
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) != 1:
        sys.exit(f"{source}: expected one nested backbone model, found {len(nested)}")
    path = out / f"{backbone}-from-{source.name}.weights.h5"
    nested[0].save_weights(path)
    return path


def run(cmd: list[str], log: Path) -> float:
    started = time.monotonic()
    with log.open("w") as handle:
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if code:
        sys.exit(f"{' '.join(cmd)} failed ({code}); see {log}")
    return time.monotonic() - started


def digits_dataset(per_class: int, image_size: int, work: Path) -> Path:
    """scikit-learn's scanned digits (real images) through ingest, preprocess and split."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    files, split = work / "digit-files", work / f"digits-split-{image_size}"
    if (split / "classes.json").is_file():
        return split
    digits = load_digits()
    for label in range(10):
        (files / f"digit{label}").mkdir(parents=True, exist_ok=True)
        for index in np.flatnonzero(digits.target == label)[:per_class]:
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((32, 32), Image.BILINEAR)
            image.convert("RGB").save(files / f"digit{label}" / f"{index:04d}.png")
    raw, pre = work / "digits-raw", work / f"digits-pre-{image_size}"
    run([*FAUNA, "ingest", "--source", str(files), "--out", str(raw)], work / "ingest.log")
    size = ["--set", f"preprocess.image_size={image_size}"]
    run([*FAUNA, "preprocess", "--raw", str(raw), "--out", str(pre), *size], work / "pre.log")
    run([*FAUNA, "split", "--data", str(pre), "--out", str(split)], work / "split.log")
    return split


def train_and_score(args, weights: Path, once: bool, seed: int, work: Path) -> dict:
    name = f"{'once' if once else 'every'}-seed{seed}"
    out, scored = work / f"train-{name}", work / f"eval-{name}"
    settings = {
        "train.weights": str(weights),
        "train.head_features_once": str(once).lower(),
        "train.head_epochs": args.head_epochs,
        "train.fine_tune_epochs": args.fine_tune_epochs,
        "train.seed": seed,
        **dict(item.split("=", 1) for item in args.overrides),
    }
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    train = [*FAUNA, "train", "--data", str(args.data), "--backbone", args.backbone]
    seconds = run([*train, "--out", str(out), *sets], work / f"{name}.train.log")
    evaluate = [*FAUNA, "evaluate", "--model", str(out), "--data", str(args.data)]
    run([*evaluate, "--out", str(scored)], work / f"{name}.evaluate.log")
    metrics = json.loads((scored / "metrics.json").read_text())
    history = json.loads((out / "history.json").read_text())
    head = [h for h in history if h["phase"] == "head"]
    return {
        "way": "features once" if once else "backbone every epoch",
        "seed": seed,
        "train_s": round(seconds, 1),
        "head_epoch_s": round(sum(h["seconds"] for h in head) / max(len(head), 1), 2),
        "head_epochs": len(head),
        "top1": metrics["top1"],
        "macro_f1": metrics["macro_f1"],
        "final_val_loss": history[-1]["val_loss"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument("--data", type=Path, help="a split or augment output")
    data.add_argument(
        "--digits", type=int, metavar="PER_CLASS", help="make one from scikit-learn's digits"
    )
    parser.add_argument("--image-size", type=int, default=80, help="with --digits")
    parser.add_argument(
        "--weights-from",
        type=Path,
        required=True,
        help="a train output or a backbone .weights.h5 standing in for ImageNet",
    )
    parser.add_argument("--backbone", required=True)
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=1)
    parser.add_argument("--seeds", default="1", help="comma-separated train.seed values")
    parser.add_argument(
        "--set", action="append", default=[], dest="overrides", metavar="K=V", help="config"
    )
    parser.add_argument("--work", type=Path, help="keep outputs and logs here (default: temp)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fauna-bench-head-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.digits:
        args.data = digits_dataset(args.digits, args.image_size, work)
    weights = backbone_weights(args.weights_from, args.backbone, work)
    print(
        f"{args.backbone} on {args.data}: weights {weights}; "
        f"{args.head_epochs} head + {args.fine_tune_epochs} fine-tune epochs; "
        f"{cpu_model()}, load {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for once in (True, False):  # alternated, so load drifts hit both ways
            rows.append(train_and_score(args, weights, once, seed, work))
            print(json.dumps(rows[-1]), flush=True)
    print("\n| way | seed | train s | head s/epoch | test top-1 | test macro-F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['way']} | {r['seed']} | {r['train_s']} | {r['head_epoch_s']} | "
            f"{r['top1']:.3f} | {r['macro_f1']:.3f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
