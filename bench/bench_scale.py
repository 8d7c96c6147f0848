"""Benchmark (not a test): how the data steps' cost grows with the dataset size.

Generated images (`fauna synth`, 30 classes, cached per size under the temp folder) go
through ingest -> preprocess -> split -> augment (oversample), each step the `fauna`
command in its own process, then one epoch of the training input pipeline (reading and
decoding the train shards, no model). Per size and step: wall time, time per image, peak
RSS (the largest single process of the step: the step or one of its workers) and disk
written (the output folder). A Markdown table on stdout, `--json` and `--plot` PNG.

    python bench/bench_scale.py --sizes 1000,10000 --plot docs/img/bench-scale.png
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
CACHE = Path(tempfile.gettempdir()) / "fauna-bench-scale"
CLASSES = 30
FAUNA = [sys.executable, "-m", "fauna.cli"]
# Runs one command and prints its peak RSS (KiB, the largest of it and its children).
PEAK = (
    "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)
EPOCH = """
import sys, time
from fauna.inputs import make_dataset
count = 0
for images, _ in make_dataset(sys.argv[1], int(sys.argv[2]), 30, 64, training=True):
    count += int(images.shape[0])
print(count, file=sys.stderr)
"""


def disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(command: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", PEAK, *command], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - start, int(done.stdout.strip().splitlines()[-1])


def run_size(images: int, image_size: int, work: Path) -> list[dict]:
    source = CACHE / f"synth-{images}"
    if not (source / "DONE").is_file():
        subprocess.run(
            [*FAUNA, "synth", "--out", str(source / "data"), "--classes", str(CLASSES),
             "--per-class", str(images // CLASSES), "-q"],
            check=True,
        )  # fmt: skip
        (source / "DONE").write_text("")
    settings = ["-q", "--set", f"preprocess.image_size={image_size}"]
    steps = [
        ("ingest", ["ingest", "--source", str(source / "data"), "--out", str(work / "raw")]),
        ("preprocess", ["preprocess", "--raw", str(work / "raw"), "--out", str(work / "pre")]),
        ("split", ["split", "--data", str(work / "pre"), "--out", str(work / "split")]),
        ("augment", ["augment", "--data", str(work / "split"), "--out", str(work / "aug"),
                     "--mode", "oversample"]),
    ]  # fmt: skip
    rows = []
    for name, args in steps:
        seconds, peak = timed([*FAUNA, *args, *settings])
        rows.append(row(images, name, seconds, peak, disk(Path(args[args.index("--out") + 1]))))
    seconds, peak = timed(
        [sys.executable, "-c", EPOCH, str(work / "aug" / "train"), str(image_size)]
    )
    rows.append(row(images, "input epoch", seconds, peak, 0))
    return rows


def row(images: int, step: str, seconds: float, peak_kib: int, written: int) -> dict:
    result = {
        "images": images,
        "step": step,
        "seconds": round(seconds, 2),
        "ms_per_image": round(1000 * seconds / images, 3),
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "disk_mib": round(written / 2**20, 1),
    }
    print(json.dumps(result), file=sys.stderr, flush=True)
    return result


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for step in dict.fromkeys(r["step"] for r in rows):
        mine = [r for r in rows if r["step"] == step]
        sizes = [r["images"] for r in mine]
        left.plot(sizes, [r["ms_per_image"] for r in mine], marker="o", label=step)
        right.plot(sizes, [r["peak_rss_mib"] for r in mine], marker="o", label=step)
    for axis, label in ((left, "ms per image"), (right, "peak RSS (MiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("images")
        axis.set_ylabel(label)
    left.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000", help="images, comma-separated")
    parser.add_argument("--image-size", type=int, default=75)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    rows = []
    for images in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="fauna-scale-") as work:
            rows += run_size(images, args.image_size, Path(work))
    print("| images | step | s | ms/image | peak RSS MiB | disk MiB |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['images']} | {r['step']} | {r['seconds']:.1f} | {r['ms_per_image']:.2f} "
            f"| {r['peak_rss_mib']:.0f} | {r['disk_mib']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.plot:
        plot(rows, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
