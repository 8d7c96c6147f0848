"""Benchmark (not a test): how the data steps' cost grows with the dataset's size.

Generated photo-like JPEGs (320x240, 30 classes of unequal size, generated once into a
cache and hardlinked into each size's folder) go through the CLI steps, each in a fresh
child process:

    ingest -> preprocess -> split -> augment (oversample) -> one training-input epoch

(the epoch: `fauna.data.input_pipeline.make_dataset` over the balanced train shards, shuffled,
reading and decoding only, no model). For each size and step it prints wall time, time
per image, the peak RSS of the step's whole process tree (sampled from /proc every 50 ms
and summed over the step and its workers; a ceiling for short peaks missed between
samples is the child's own ru_maxrss, shown when larger) and the bytes the step wrote
(files in its output not hardlinked from its input).

    python bench/bench_scale.py                     # 1k and 10k
    python bench/bench_scale.py --sizes 1000,10000,100000 --plot docs/scaling.png
    python bench/bench_scale.py --sizes 100000 --until ingest   # one step only
    python bench/bench_scale.py --json /tmp/scale.json   # machine-readable results

Wall time includes each child's start-up (Python, and TensorFlow where the step imports
it: a fixed few seconds that dominates at 1k).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path

CACHE = Path(tempfile.gettempdir()) / "fauna-bench-scale" / "v1"
POOL = CACHE / "pool"
CLASSES = [f"class{i:02d}" for i in range(30)]
# Unequal classes (the largest ~2x the smallest) so oversampling has work to do.
WEIGHTS = [1.0 + i / (len(CLASSES) - 1) for i in range(len(CLASSES))]
FAUNA = str(Path(sys.executable).with_name("fauna"))
STEPS = ("ingest", "preprocess", "split", "augment", "epoch")
MIB = 1 << 20
_noise = None


def _photo(index: int, path: Path) -> None:
    """Smooth random gradients + sensor-like noise, 320x240, JPEG q90."""
    global _noise
    import numpy as np
    from PIL import Image

    if _noise is None:
        _noise = np.random.default_rng(0).standard_normal((496, 576, 3), dtype=np.float32) * 6
    rng = np.random.default_rng(index)
    coarse = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
    smooth = Image.fromarray(coarse.astype(np.uint8)).resize((320, 240), Image.BICUBIC)
    top, left = int(rng.integers(0, 257)), int(rng.integers(0, 257))
    pixels = np.asarray(smooth, dtype=np.float32) + _noise[top : top + 240, left : left + 320]
    partial = path.with_suffix(".partial")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(partial, "JPEG", quality=90)
    partial.rename(path)


def _label(index: int) -> str:
    """A deterministic class for image `index`, drawn with WEIGHTS."""
    total, point = sum(WEIGHTS), (index * 0.6180339887498949) % 1.0 * sum(WEIGHTS)
    for label, weight in zip(CLASSES, WEIGHTS, strict=True):
        point -= weight
        if point < 0:
            return label
    return CLASSES[-1] if total else CLASSES[0]


def dataset(count: int) -> Path:
    """A folder of class folders holding the first `count` generated JPEGs (cached)."""
    root = CACHE / f"folder-{count}"
    if (root / "READY").is_file():
        return root
    POOL.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (POOL / f"{i:06d}.jpg").is_file()]
    if missing:
        print(f"generating {len(missing)} JPEGs in {POOL} (once) ...", flush=True)
        with get_context("spawn").Pool() as pool:
            pool.starmap(_photo, [(i, POOL / f"{i:06d}.jpg") for i in missing], chunksize=64)
    shutil.rmtree(root, ignore_errors=True)
    for label in CLASSES:
        (root / label).mkdir(parents=True)
    for i in range(count):
        os.link(POOL / f"{i:06d}.jpg", root / _label(i) / f"{i:06d}.jpg")
    (root / "READY").write_text("")
    return root


# ---------------------------------------------------------------- measuring one child


def _tree_rss(root: int) -> int:
    """Summed RSS (bytes) of `root` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    total, todo, page = 0, [root], os.sysconf("SC_PAGE_SIZE")
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/statm") as fh:
                total += int(fh.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            pass
    return total


def _inodes(root: Path) -> set[tuple[int, int]]:
    found = set()
    for path in root.rglob("*"):
        if path.is_file():
            st = path.stat()
            found.add((st.st_dev, st.st_ino))
    return found


def _written(out: Path, given: Path | None) -> int:
    """Bytes of the files in `out` that are not hardlinks of files in `given`."""
    seen = _inodes(given) if given else set()
    total = 0
    for path in out.rglob("*"):
        if path.is_file():
            st = path.stat()
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def measure(argv: list[str], log: Path) -> dict[str, float]:
    """Run argv; wall seconds and peak RSS (MiB) of its whole process tree."""
    peak, done = [0], threading.Event()
    with log.open("w") as fh:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT)

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], _tree_rss(proc.pid))
                done.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"{' '.join(argv[:2])} failed ({proc.returncode}): see {log}")
    own = usage.ru_maxrss * 1024  # KiB on Linux
    return {"wall_s": wall, "peak_mib": max(peak[0], own) / MIB}


EPOCH = """
import json, sys, time
from pathlib import Path
from fauna.data.input_pipeline import make_dataset
from fauna.data.dataset import read_classes
d = Path(sys.argv[1])
size = json.loads((d / "preprocess.json").read_text())["image_size"]
started, n = time.perf_counter(), 0
for images, _ in make_dataset(d / "train", size, len(read_classes(d)), 32, training=True):
    n += int(images.shape[0])
print(json.dumps({"images": n, "loop_s": time.perf_counter() - started}))
"""


def run_size(count: int, work: Path, until: str = "epoch") -> list[dict[str, float]]:
    src = dataset(count)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    d = {name: work / name for name in ("raw", "pre", "split", "bal")}
    raw, pre, split, bal = (str(path) for path in d.values())
    plan = [
        ("ingest", ["ingest", "--source", str(src), "--out", raw], None, "raw"),
        ("preprocess", ["preprocess", "--raw", raw, "--out", pre], "raw", "pre"),
        ("split", ["split", "--data", pre, "--out", split], "pre", "split"),
        (
            "augment",
            ["augment", "--data", split, "--out", bal, "--mode", "oversample"],
            "split",
            "bal",
        ),
    ]
    rows = []
    for step, args, given, out in plan:
        got = measure([FAUNA, *args], work / f"{step}.log")
        got["written_mib"] = _written(d[out], d[given] if given else None) / MIB
        rows.append({"size": count, "step": step, "images": count, **got})
        _show(rows[-1])
        if step == until:
            return rows
    got = measure([sys.executable, "-c", EPOCH, str(d["bal"])], work / "epoch.log")
    images = json.loads((work / "epoch.log").read_text().strip().splitlines()[-1])["images"]
    rows.append({"size": count, "step": "epoch", "images": images, **got, "written_mib": 0.0})
    _show(rows[-1])
    return rows


def _show(row: dict[str, float]) -> None:
    row["ms_per_image"] = 1000 * row["wall_s"] / row["images"]
    print(
        f"{row['size']:>7} {row['step']:<10} {row['wall_s']:8.1f} s {row['ms_per_image']:7.2f} "
        f"ms/img {row['peak_mib']:7.0f} MiB peak {row['written_mib']:8.1f} MiB written",
        flush=True,
    )


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for step in STEPS:
        mine = sorted((r for r in rows if r["step"] == step), key=lambda r: r["size"])
        sizes = [r["size"] for r in mine]
        left.plot(sizes, [r["ms_per_image"] for r in mine], marker="o", label=step)
        right.plot(sizes, [r["peak_mib"] for r in mine], marker="o", label=step)
    for ax, title in ((left, "wall time per image (ms)"), (right, "peak RSS, process tree (MiB)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("dataset size (images)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    left.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated image counts")
    parser.add_argument("--work", type=Path, default=CACHE / "work")
    parser.add_argument("--until", choices=STEPS, default="epoch", help="stop after this step")
    parser.add_argument("--plot", type=Path, help="write the PNG plot here")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")
    load = os.getloadavg()
    print(f"{cpu}, {os.cpu_count()} CPUs, {platform.python_version()}; load at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    rows = []
    for count in (int(s) for s in args.sizes.split(",")):
        rows.extend(run_size(count, args.work / str(count), args.until))
        shutil.rmtree(args.work / str(count), ignore_errors=True)
    print(f"load at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "load": load, "rows": rows}, indent=1))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
