"""Benchmark (not a test): the preprocess step against a naive Pillow loop, and its memory.

Prints, in one run on the same generated photo-sized JPEGs:
  - naive Pillow images/s on one core (open -> full decode -> RGB -> LANCZOS resize of the
    shorter side -> centre crop; it does not even encode or write its results),
  - the step's images/s on one core and on all cores, and the two ratios,
  - the step's peak RSS (main process and workers) at two dataset sizes.

Every measurement runs in a fresh subprocess pinned to the CPUs it may use
(sched_setaffinity), so "1 core" means one core for everything, pool included.
Speed runs are the best of --repeat; TensorFlow's import (a fixed ~3 s in the
main process, for the shard writer) is outside the timed region.

    python bench/bench_preprocess.py                      # 1000 images; RSS at 1000 and 8000
    python bench/bench_preprocess.py --images 300 --sizes 200,1000   # quick
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from multiprocessing import get_context
from pathlib import Path

HERE = Path(__file__).resolve()
# Generated images live in one pool shared by every dataset size (hardlinked in);
# bump the version when the generator changes.
CACHE = Path(tempfile.gettempdir()) / "fauna-bench-preprocess" / "v2"
POOL = CACHE / "pool"
LABELS = [f"class{i:02d}" for i in range(10)]
NOISE_SIGMA = 6.0
_noise = None  # per generator process: one large noise field, windows of it per image


def _photo(index: int, path: Path) -> None:
    """A photo-like JPEG: smooth random gradients + sensor-like noise, q90, 800x600..1600x1200."""
    global _noise
    import numpy as np
    from PIL import Image

    if _noise is None:
        field = np.random.default_rng(0).standard_normal((1456, 1856, 3), dtype=np.float32)
        _noise = field * NOISE_SIGMA
    rng = np.random.default_rng(index)
    width, height = int(rng.integers(800, 1601)), int(rng.integers(600, 1201))
    coarse = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3))
    smooth = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC)
    top, left = int(rng.integers(0, 257)), int(rng.integers(0, 257))
    pixels = np.asarray(smooth, dtype=np.float32) + _noise[top : top + height, left : left + width]
    partial = path.with_suffix(".partial")
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(partial, "JPEG", quality=90)
    partial.rename(path)  # a cached file is always complete


def _pool_name(index: int) -> str:
    return f"img_{index:06d}.jpg"


def dataset(count: int) -> Path:
    """An ingest-like directory of the first `count` generated JPEGs, cached across runs."""
    from PIL import Image

    from fauna.data.dataset import MANIFEST, write_json, write_manifest
    from fauna.step_output import mark_complete

    root = CACHE / str(count)
    if (root / "READY").is_file():
        mark_complete(root, "ingest")  # preprocess reads completed ingest outputs only
        return root
    POOL.mkdir(parents=True, exist_ok=True)
    missing = [i for i in range(count) if not (POOL / _pool_name(i)).is_file()]
    if missing:
        print(f"generating {len(missing)} photo-sized JPEGs in {POOL} (once) ...", flush=True)
        with get_context("spawn").Pool() as pool:
            tasks = [(i, POOL / _pool_name(i)) for i in missing]
            pool.starmap(_photo, tasks, chunksize=16)
    shutil.rmtree(root, ignore_errors=True)
    rows = []
    for index in range(count):
        label = LABELS[index % len(LABELS)]
        rel = f"images/{label}/{_pool_name(index)}"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(POOL / _pool_name(index), root / rel)
        except OSError:
            shutil.copyfile(POOL / _pool_name(index), root / rel)
        with Image.open(root / rel) as img:
            width, height = img.size
        sha = hashlib.sha256((root / rel).read_bytes()).hexdigest()
        rows.append([rel, label, sha, width, height, "JPEG"])
    fields = ["path", "label", "sha256", "width", "height", "format"]
    write_manifest(root / MANIFEST, (dict(zip(fields, r, strict=True)) for r in rows), fields)
    write_json(root / "classes.json", LABELS)
    write_json(
        root / "source.json",
        {"source": "bench", "name": f"bench{count}", "synthetic": True, "version": str(count)},
    )
    mark_complete(root, "ingest")
    (root / "READY").write_text("")
    return root


def _warm_page_cache(root: Path) -> None:
    for path in (root / "images").rglob("*.jpg"):
        path.read_bytes()


# ---------------------------------------------------------------- measurements (subprocess)


def _cpu_seconds() -> float:
    """CPU time of this process and of its children that have been waited for."""
    me, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _naive(raw: Path, image_size: int, resample_name: str) -> dict[str, float]:
    from PIL import Image

    from fauna.data.dataset import read_manifest

    resample = Image.Resampling[resample_name.upper()]
    paths = [raw / row["path"] for row in read_manifest(raw / "manifest.csv")]
    started, cpu = time.perf_counter(), _cpu_seconds()
    for path in paths:
        with Image.open(path) as img:
            img = img.convert("RGB")  # full decode
        scale = image_size / min(img.size)
        size = (round(img.width * scale), round(img.height * scale))
        img = img.resize((max(image_size, size[0]), max(image_size, size[1])), resample)
        left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
        img.crop((left, top, left + image_size, top + image_size))
    return {
        "images_per_s": len(paths) / (time.perf_counter() - started),
        "images_per_cpu_s": len(paths) / (_cpu_seconds() - cpu),
    }


class _RssSampler(threading.Thread):
    """Polls /proc for this process and its children: per-process high-water marks
    (VmHWM) and the largest sum of resident sets seen. ru_maxrss cannot serve for the
    workers: a spawned child's counts its pre-exec fork copy of the parent."""

    def __init__(self, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stop = threading.Event()
        self.hwm_kib: dict[int, int] = {}
        self.peak_total_kib = 0

    def run(self) -> None:
        me = os.getpid()
        while not self.stop.is_set():
            total = 0
            for pid in [me, *_children(me)]:
                rss, hwm = _status_kib(pid, "VmRSS"), _status_kib(pid, "VmHWM")
                total += rss
                self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
            self.peak_total_kib = max(self.peak_total_kib, total)
            self.stop.wait(self.interval)


def _children(pid: int) -> list[int]:
    kids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(entry.name))
    return kids


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _step(raw: Path, image_size: int, sample_rss: bool) -> dict[str, float]:
    import fauna.data.records  # noqa: F401 - TensorFlow's import is not part of the timing
    from fauna.config import Config
    from fauna.steps.preprocess import available_cpus, preprocess_dataset

    cfg = Config.from_dict({"preprocess": {"image_size": image_size, "workers": 0}}).preprocess
    sampler = _RssSampler()
    if sample_rss:
        sampler.start()
    with tempfile.TemporaryDirectory(prefix="fauna-bench-out-") as out:
        started, cpu = time.perf_counter(), _cpu_seconds()
        result = preprocess_dataset(raw, Path(out), cfg)
        seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    sampler.stop.set()
    me = os.getpid()
    mib = 1024
    workers = [kib for pid, kib in sampler.hwm_kib.items() if pid != me]
    return {
        "images_per_s": result.count / seconds,
        "images_per_cpu_s": result.count / cpu,
        "workers": min(available_cpus(), result.count),
        "main_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib,
        "worker_peak_mib": max(workers, default=0) / mib,
        "sum_of_peaks_mib": (sampler.hwm_kib.get(me, 0) + sum(workers)) / mib,
        "peak_total_mib": sampler.peak_total_kib / mib,
    }


def measure(kind: str, raw: Path, cpus: int, image_size: int, resample: str = "lanczos") -> dict:
    """Run one measurement (naive | step | step-rss) in a fresh interpreter pinned to `cpus`."""
    cmd = [sys.executable, str(HERE), "--_measure", kind, "--_raw", str(raw)]
    cmd += ["--_cpus", str(cpus), "--image-size", str(image_size), "--_resample", resample]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"measurement {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _child(args: argparse.Namespace) -> None:
    cpus = sorted(os.sched_getaffinity(0))[: args._cpus]
    os.sched_setaffinity(0, cpus)
    raw = Path(args._raw)
    if args._measure == "naive":
        result = _naive(raw, args.image_size, args._resample)
    else:
        result = _step(raw, args.image_size, sample_rss=args._measure == "step-rss")
    print(json.dumps(result))


# ---------------------------------------------------------------- report


def _fidelity(raw: Path, image_size: int, samples: int = 50) -> float:
    """Mean |step - naive| per channel on a few images (0..255): what the shortcuts cost."""
    import io

    import numpy as np
    from PIL import Image

    from fauna.data.dataset import read_manifest
    from fauna.data.imaging import preprocess_image

    rows = list(read_manifest(raw / "manifest.csv"))[:samples]
    diffs = []
    for row in rows:
        with Image.open(raw / row["path"]) as img:
            img = img.convert("RGB")
        scale = image_size / min(img.size)
        img = img.resize(
            (max(image_size, round(img.width * scale)), max(image_size, round(img.height * scale))),
            Image.Resampling.LANCZOS,
        )
        left, top = (img.width - image_size) // 2, (img.height - image_size) // 2
        naive = np.asarray(img.crop((left, top, left + image_size, top + image_size)), float)
        fast = Image.open(io.BytesIO(preprocess_image(raw / row["path"], image_size, "crop", 95)))
        diffs.append(np.abs(np.asarray(fast, float) - naive).mean())
    return float(np.mean(diffs))


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="dataset size for the speed runs")
    parser.add_argument("--sizes", default="1000,8000", help="dataset sizes for peak RSS")
    parser.add_argument("--repeat", type=int, default=5, help="speed runs: best of this many")
    parser.add_argument("--image-size", type=int, default=None, help="default: the config's")
    for hidden in ("--_measure", "--_raw", "--_resample"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--_cpus", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.image_size is None:
        from fauna.config import PreprocessConfig

        args.image_size = PreprocessConfig().image_size
    if args._measure:
        _child(args)
        return

    import PIL
    from PIL import features

    from fauna.steps.preprocess import FILTER_NAME, available_cpus

    cores = available_cpus()
    sizes = [int(s) for s in args.sizes.split(",") if s]
    speed_raw = dataset(args.images)
    for count in sizes:
        dataset(count)
    _warm_page_cache(speed_raw)
    load = os.getloadavg()[0]
    total_bytes = sum(p.stat().st_size for p in (speed_raw / "images").rglob("*.jpg"))
    from fauna.data.dataset import read_manifest

    pixels = sum(
        int(r["width"]) * int(r["height"]) for r in read_manifest(speed_raw / "manifest.csv")
    )
    n, size = args.images, args.image_size
    print(
        f"\nfauna preprocess benchmark: {n} generated JPEGs, 800x600..1600x1200, quality 90, "
        f"{8 * total_bytes / pixels:.2f} bits/pixel -> {size}x{size} crop, {FILTER_NAME}"
    )
    print(
        f"machine: {_machine()}, {cores} cores usable; Python {platform.python_version()}, "
        f"Pillow {PIL.__version__} (libjpeg-turbo {features.version('libjpeg_turbo')}); "
        f"load average at the start {load:.2f}"
    )
    print(
        f"speed: best of {args.repeat} interleaved runs, each in a fresh process "
        "pinned to its cores\n"
    )

    runs: dict[str, list[dict]] = {"naive": [], "one": [], "all": []}
    for _ in range(args.repeat):
        runs["naive"].append(measure("naive", speed_raw, 1, size))
        runs["one"].append(measure("step", speed_raw, 1, size))
        runs["all"].append(measure("step", speed_raw, cores, size))
    naive, one, allc = (max(runs[k], key=lambda r: r["images_per_s"]) for k in runs)
    bicubic = measure("naive", speed_raw, 1, size, "bicubic")
    r1 = one["images_per_s"] / naive["images_per_s"]
    rc = allc["images_per_s"] / one["images_per_s"]
    print(f"{'':30s}{'images/s':>10s}{'img/CPU-s':>11s}")
    rows = [
        ("naive Pillow loop, 1 core", naive, ""),
        ("fauna preprocess, 1 core", one, f"{r1:.2f}x naive"),
        (f"fauna preprocess, {cores} cores", allc, f"{rc:.2f}x its 1-core speed"),
    ]
    for name, r, note in rows:
        print(f"{name:30s}{r['images_per_s']:10.1f}{r['images_per_cpu_s']:11.1f}   {note}")
    print(
        f"goals: >= 3.5x naive on 1 core: {'met' if r1 >= 3.5 else 'MISSED'}; "
        f">= 1.8x from 1 to 2 cores: {'met' if rc >= 1.8 else 'MISSED'}"
        + ("" if cores == 2 else f" (this machine has {cores} cores)")
    )
    all_runs = "  ".join(
        f"{k}: " + ", ".join(f"{r['images_per_s']:.0f}" for r in v) for k, v in runs.items()
    )
    print(f"every run, images/s: {all_runs}")
    print(
        f"context: the naive loop with BICUBIC instead of LANCZOS does "
        f"{bicubic['images_per_s']:.1f} images/s (the step is "
        f"{one['images_per_s'] / bicubic['images_per_s']:.2f}x that on 1 core)"
    )
    print(f"output vs the naive loop: mean |difference| {_fidelity(speed_raw, size):.2f} / 255")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")

    print(f"\npeak memory of the step on {cores} cores (MiB; /proc sampled every 0.25 s):")
    print(
        f"{'images':>8s}{'main':>8s}{'1 worker':>10s}{'sum of peaks':>14s}"
        f"{'total':>8s}{'img/s':>8s}"
    )
    for count in sizes:
        raw = dataset(count)
        _warm_page_cache(raw)
        r = measure("step-rss", raw, cores, size)
        print(
            f"{count:8d}{r['main_peak_mib']:8.0f}{r['worker_peak_mib']:10.0f}"
            f"{r['sum_of_peaks_mib']:14.0f}{r['peak_total_mib']:8.0f}{r['images_per_s']:8.1f}"
        )
    print(
        "main: the main process (TensorFlow for the shard writer); 1 worker: the largest pool\n"
        "process; sum of peaks: every process's own peak added up (an upper bound); total: the\n"
        "largest sum of resident sets seen at one time (shared library pages counted per process)"
    )


if __name__ == "__main__":
    main()
