"""preprocess: every image to an NxN RGB JPEG in TFRecord shards, streaming, on all cores.

`crop` (the paper's version 2) scales the shorter side to N and keeps the centred
NxN square; `stretch` (version 1) squashes the whole image to NxN. Both use
Pillow's LANCZOS filter.

Speed: JPEGs are decoded at a reduced scale in the DCT domain (`Image.draft`:
1/2, 1/4 or 1/8, always keeping the shorter side >= N), and the resize works on
the crop box only, so a photo-sized JPEG costs a fraction of a full decode.
Memory: the manifest is read row by row, at most a fixed window of images is in
flight between the pool and the shard writer, and shards are written as we go.

The pool's worker processes import this module, so it imports little at module
level (no TensorFlow, which only the main process needs to write shards).
"""

from __future__ import annotations

import io
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import ExifTags, Image

from fauna.dataset import (
    CLASSES,
    MANIFEST,
    PREPROCESS_INFO,
    SOURCE,
    DatasetError,
    Quarantine,
    read_classes,
    read_json,
    read_manifest,
    write_json,
    write_manifest,
)

if TYPE_CHECKING:
    import numpy as np

    from fauna.config import Config, PreprocessConfig

log = logging.getLogger(__name__)

STEP = "preprocess"
SHARDS_DIR = "shards"
MANIFEST_FIELDS = ["id", "label", "label_index", "sha256", "shard"]
RESAMPLE = Image.Resampling.LANCZOS
FILTER_NAME = "lanczos"
# Non-JPEGs (no DCT shortcut) are first shrunk by an integer factor with `reduce`,
# leaving >= 3x for LANCZOS: indistinguishable from a full LANCZOS resize.
REDUCING_GAP = 3.0
# Transparent pixels are composited onto white (not black, not dropped alpha).
BACKGROUND = (255, 255, 255, 255)
# Images per pool task, and how many tasks may be in flight per worker.
CHUNKSIZE = 8
CHUNKS_IN_FLIGHT_PER_WORKER = 4

# EXIF orientation -> the transpose that displays the image upright (as ImageOps.exif_transpose).
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@dataclass(frozen=True)
class PreprocessResult:
    out: Path
    count: int
    quarantined: int
    shards: int
    seconds: float


@dataclass(frozen=True)
class _Job:
    """What a worker needs besides the manifest row (small: it is pickled per chunk)."""

    raw: str
    size: int
    mode: str
    quality: int


# (manifest row, JPEG bytes or None, quarantine reason, detail)
Outcome = tuple[dict[str, str], bytes | None, str, str]


# ---------------------------------------------------------------- one image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: deep pixels are scaled, transparency goes onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        return Image.fromarray(_to_uint8(image)).convert("RGB")
    if image.mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, BACKGROUND), rgba).convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, ...


def _to_uint8(image: Image.Image) -> np.ndarray:
    """16-bit, 32-bit or float pixels mapped onto 0..255 by scaling, never by clipping.

    I;16 is 0..65535 by definition. For I and F the range is guessed from the
    values: the first of 0..1 (float only), 0..255, 0..65535 that holds them,
    else their own min..max.
    """
    import numpy as np

    pixels = np.asarray(image)
    values = pixels.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if pixels.dtype.kind == "u" and pixels.dtype.itemsize == 2:
        span = (0.0, 65535.0)
    else:
        ranges = ([(0.0, 1.0)] if pixels.dtype.kind == "f" else []) + [(0.0, 255.0), (0.0, 65535.0)]
        span = next(((a, b) for a, b in ranges if a <= low and high <= b), (low, high))
    scale = 255.0 / max(span[1] - span[0], 1e-12)
    return np.clip(np.rint((values - span[0]) * scale), 0, 255).astype(np.uint8)


def transform(image: Image.Image, size: int, mode: str) -> Image.Image:
    """Decode (at a reduced JPEG scale where possible), orient, to RGB, resize [+ centre crop]."""
    drafted = image.draft("RGB", (size, size))  # JPEG only; keeps both sides >= size
    image.load()
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block: the pixels are still good
        orientation = 1
    # A reduced JPEG decode rounds its size up; `box` is the true image area in it.
    width, height = drafted[1][2:] if drafted else image.size
    if mode == "crop":
        side = min(width, height)
        box = ((width - side) / 2, (height - side) / 2, (width + side) / 2, (height + side) / 2)
    else:
        box = (0, 0, width, height)
    # The centre square (and the whole-image stretch) is the same region whatever the
    # orientation, so resizing first and orienting the small result is exact and cheaper.
    result = to_rgb(image).resize((size, size), RESAMPLE, box=box, reducing_gap=REDUCING_GAP)
    transpose = _ORIENT.get(orientation)
    return result.transpose(transpose) if transpose is not None else result


def preprocess_image(path: Path, size: int, mode: str, quality: int) -> bytes:
    """One image file -> NxN RGB JPEG bytes (no metadata; already upright)."""
    with Image.open(path) as image:
        result = transform(image, size, mode)
    buffer = io.BytesIO()
    # 4:4:4: at training sizes, halving the chroma resolution visibly smears colour edges.
    result.save(buffer, "JPEG", quality=quality, subsampling=0)
    return buffer.getvalue()


def process_row(job: _Job, row: dict[str, str]) -> Outcome:
    """Pool task: never raises, a failure comes back as a quarantine reason."""
    try:
        data = preprocess_image(Path(job.raw) / row["path"], job.size, job.mode, job.quality)
    except FileNotFoundError:
        return row, None, "missing file", row["path"]
    except Image.DecompressionBombError as exc:
        return row, None, "decompression bomb", str(exc)[:300]
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "cannot use this file"
        return row, None, "undecodable", f"{type(exc).__name__}: {exc}"[:300]
    return row, data, "", ""


# ---------------------------------------------------------------- the step


def available_cpus() -> int:
    """CPUs this process may use: affinity, then a cgroup CPU quota (Kubernetes limits)."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quota = _cgroup_cpu_quota()
    return max(1, min(count or 1, quota) if quota else (count or 1))


def _cgroup_cpu_quota() -> int | None:
    try:
        text = Path("/sys/fs/cgroup/cpu.max").read_text().split()  # cgroup v2: "max 100000"
        limit, period = text[0], text[1]
    except (OSError, IndexError):
        try:  # cgroup v1
            limit = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text().strip()
            period = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if limit in ("max", "-1"):
        return None
    return max(1, -(-int(limit) // int(period)))


def _rows(manifest: Path) -> Iterator[dict[str, str]]:
    for row in read_manifest(manifest):
        missing = [k for k in ("path", "label", "sha256") if k not in row]
        if missing:
            raise DatasetError(f"{manifest} has no column {', '.join(missing)}")
        yield {"path": row["path"], "label": row["label"], "sha256": row["sha256"]}


def _bounded(items: Iterable[Any], slots: threading.Semaphore, stop: threading.Event) -> Iterator:
    """Hand out items only while a slot is free: Pool.imap would otherwise read them all.

    Runs in the pool's task thread; it gives up when told to, or when the interpreter
    is exiting, so that a consumer that went away can never leave the pool hanging.
    """
    for item in items:
        while not slots.acquire(timeout=0.2):
            if stop.is_set() or not threading.main_thread().is_alive():
                return
        if stop.is_set():
            return
        yield item


def _outcomes(manifest: Path, job: _Job, workers: int) -> Iterator[Outcome]:
    """Each manifest row's outcome, in manifest order; at most a fixed window in flight."""
    rows = _rows(manifest)
    if workers <= 1:  # no pool: nothing to gain from one worker process
        for row in rows:
            yield process_row(job, row)
        return
    slots = threading.Semaphore(CHUNKSIZE * CHUNKS_IN_FLIGHT_PER_WORKER * workers)
    stop = threading.Event()
    # spawn: the workers start clean, without the main process's TensorFlow threads.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        try:
            tasks = _bounded(rows, slots, stop)
            for outcome in pool.imap(partial(process_row, job), tasks, chunksize=CHUNKSIZE):
                slots.release()
                yield outcome
            pool.close()
            pool.join()
        finally:
            stop.set()


def _count_rows(manifest: Path) -> int:
    return sum(1 for _ in read_manifest(manifest))


def preprocess_dataset(raw: Path, out: Path, cfg: PreprocessConfig) -> PreprocessResult:
    """An ingest output directory -> NxN JPEGs in TFRecord shards + manifest + report."""
    raw, out = Path(raw), Path(out)
    started = time.monotonic()
    classes = read_classes(raw)
    source = read_json(raw / SOURCE)
    total = _count_rows(raw / MANIFEST)
    if total == 0:
        raise DatasetError(f"{raw / MANIFEST} lists no images: nothing to preprocess")
    # Main process only: TensorFlow (heavy, and it must not be in the workers).
    from tqdm import tqdm

    from fauna.records import SHARD_GLOB, Record, ShardWriter, shard_paths

    shard_dir = out / SHARDS_DIR
    for stale in shard_dir.glob(SHARD_GLOB):
        stale.unlink()
    label_index = {name: i for i, name in enumerate(classes)}
    quarantine = Quarantine(STEP, total_in=total)
    job = _Job(str(raw), cfg.image_size, cfg.mode, cfg.jpeg_quality)
    workers = min(cfg.workers or available_cpus(), total)
    log.info("preprocess: %d images from %s with %d worker(s)", total, raw, workers)

    with (
        ShardWriter(shard_dir, cfg.images_per_shard) as writer,
        tqdm(total=total, desc=STEP, unit="img", mininterval=1.0) as progress,
        closing(_outcomes(raw / MANIFEST, job, workers)) as outcomes,  # stops the pool
    ):

        def kept_rows() -> Iterator[dict[str, Any]]:
            for row, data, reason, detail in outcomes:
                progress.update()
                if row["label"] not in label_index:
                    quarantine.reject(row["path"], "unknown label", row["label"])
                elif data is None:
                    quarantine.reject(row["path"], reason, detail)
                else:
                    index = label_index[row["label"]]
                    rec = Record(data, index, row["label"], row["sha256"], row["path"])
                    shard = writer.write(rec)  # its file name in shards/
                    yield {**row, "id": row["path"], "label_index": index, "shard": shard}

        quarantine.kept = write_manifest(out / MANIFEST, kept_rows(), MANIFEST_FIELDS)

    write_json(out / CLASSES, classes)
    write_json(out / SOURCE, source)
    write_json(
        out / PREPROCESS_INFO,
        {
            "image_size": cfg.image_size,
            "mode": cfg.mode,
            "filter": FILTER_NAME,
            "jpeg_quality": cfg.jpeg_quality,
            "images_per_shard": cfg.images_per_shard,
            "count": quarantine.kept,
        },
    )
    quarantine.write(out)
    log.info("%s", quarantine.summary())
    if quarantine.kept == 0:
        raise DatasetError(f"no image of {raw} could be preprocessed (see {out / 'report.txt'})")
    shards = len(shard_paths(shard_dir))
    return PreprocessResult(
        out, quarantine.kept, len(quarantine.items), shards, time.monotonic() - started
    )


# ---------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument("--raw", required=True, type=Path, metavar="DIR", help="an ingest output")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output folder")
    parser.add_argument("--image-size", type=int, metavar="N", help="sets preprocess.image_size")
    parser.add_argument("--mode", metavar="crop|stretch", help="sets preprocess.mode")
    parser.add_argument("--workers", type=int, metavar="N", help="sets preprocess.workers")


def run(args: Any, cfg: Config) -> int:
    given = {"image_size": args.image_size, "mode": args.mode, "workers": args.workers}
    cfg = cfg.merged({"preprocess": {k: v for k, v in given.items() if v is not None}})
    result = preprocess_dataset(args.raw, args.out, cfg.preprocess)
    print((args.out / "report.txt").read_text(), end="")
    print(
        f"wrote {result.count} images ({cfg.preprocess.image_size}px, {cfg.preprocess.mode}) "
        f"in {result.shards} shard(s) to {result.out} in {result.seconds:.1f}s"
    )
    return 0
