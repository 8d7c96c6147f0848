"""preprocess: every image to an NxN RGB JPEG in TFRecord shards, streaming, on all cores.

The one-image transform (decode at a reduced JPEG scale, orient, RGB, LANCZOS resize
and centre crop or stretch) is `fauna.data.imaging.preprocess_image`, shared with predict.
Memory: the manifest is read row by row, at most a fixed window of images is in
flight between the pool and the shard writer, and shards are written as we go.
The output is written through `fauna.step_output.step_output` (complete or absent).

The pool's worker processes import this module, so it imports little at module
level (no TensorFlow, which only the main process needs to write shards).
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import warnings
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from fauna.contracts import Classes, PreprocessInfo, SourceInfo
from fauna.data.dataset import (
    INGEST_STEP,
    MANIFEST,
    PREPROCESS_STEP,
    SHARDS_DIR,
    DatasetError,
    Quarantine,
    check_distinct,
    read_classes,
    read_manifest,
    write_manifest,
)
from fauna.data.imagecheck import BOMB, bomb_from_pillow, bomb_warnings_as_errors
from fauna.data.imaging import FILTER_NAME, preprocess_image
from fauna.logs import progress
from fauna.step_output import require_output, step_output

if TYPE_CHECKING:
    from fauna.config import Config, PreprocessConfig

log = logging.getLogger(__name__)

STEP = PREPROCESS_STEP
MANIFEST_FIELDS = ["id", "label", "label_index", "sha256", "shard"]
# Images per pool task, and how many tasks may be in flight per worker.
CHUNKSIZE = 8
CHUNKS_IN_FLIGHT_PER_WORKER = 4
# The pixel limit when the ingest output does not record one (DataConfig's default).
DEFAULT_MAX_PIXELS = 89_478_485


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
    # The decompression-bomb limit ingest checked with (data.max_image_pixels).
    max_pixels: int = DEFAULT_MAX_PIXELS


# (manifest row, JPEG bytes or None, quarantine reason, detail)
Outcome = tuple[dict[str, str], bytes | None, str, str]


def process_row(job: _Job, row: dict[str, str]) -> Outcome:
    """Pool task: never raises, a failure comes back as a quarantine reason."""
    try:
        data = preprocess_image(Path(job.raw) / row["path"], job.size, job.mode, job.quality)
    except FileNotFoundError:
        return row, None, "missing file", row["path"]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return row, None, BOMB, bomb_from_pillow(exc, job.max_pixels).detail[:300]
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "cannot use this file"
        return row, None, "undecodable", f"{type(exc).__name__}: {exc}"[:300]
    return row, data, "", ""


def _init_worker(max_pixels: int) -> None:
    """Pool initializer: Pillow's bomb guard at ingest's limit, its warning as an error."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


# ---------------------------------------------------------------- the step


def available_cpus() -> int:
    """CPUs this process may use: affinity and cgroup CPU quotas (Kubernetes limits), by loky."""
    from joblib.externals.loky import cpu_count

    return max(1, cpu_count())


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
        with bomb_warnings_as_errors(job.max_pixels):
            for row in rows:
                yield process_row(job, row)
        return
    slots = threading.Semaphore(CHUNKSIZE * CHUNKS_IN_FLIGHT_PER_WORKER * workers)
    stop = threading.Event()
    # spawn: the workers start clean, without the main process's TensorFlow threads.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(job.max_pixels,)) as pool:
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
    """An ingest output directory -> NxN JPEGs in TFRecord shards + manifest + report.

    `out` appears complete (with its completion marker) or not at all.
    """
    raw, out = Path(raw), Path(out)
    started = time.monotonic()
    require_output(raw, INGEST_STEP, role="--raw")
    check_distinct(raw, out)
    total = _count_rows(raw / MANIFEST)
    if total == 0:
        raise DatasetError(f"{raw / MANIFEST} lists no images: nothing to preprocess")
    with step_output(out, STEP) as tmp:
        quarantine = _write_shards(raw, tmp, cfg, total)
        if quarantine.kept == 0:
            reasons = ", ".join(f"{n} {reason}" for reason, n in quarantine.reasons.items())
            raise DatasetError(f"no image of {raw} could be preprocessed ({reasons})")
        _write_info(raw, tmp, cfg, quarantine)
        from fauna.data.records import shard_paths

        shards = len(shard_paths(tmp / SHARDS_DIR))
    elapsed = time.monotonic() - started
    reasons = "".join(f"; {n} {reason}" for reason, n in quarantine.reasons.items())
    log.info(
        "%d in = %d kept + %d quarantined%s: %dpx %s JPEGs in %d shard(s) -> %s in %.1f s",
        *(quarantine.total_in, quarantine.kept, quarantine.count, reasons),
        *(cfg.image_size, cfg.mode, shards, out, elapsed),
    )
    return PreprocessResult(out, quarantine.kept, quarantine.count, shards, elapsed)


def _write_shards(raw: Path, out: Path, cfg: PreprocessConfig, total: int) -> Quarantine:
    """Every manifest row's image into shards (or the quarantine), and the new manifest."""
    # Main process only: TensorFlow (heavy, and it must not be in the workers).
    from fauna.data.records import Record, ShardWriter

    classes = read_classes(raw)
    label_index = {name: i for i, name in enumerate(classes)}
    quarantine = Quarantine(STEP, total_in=total)
    max_pixels = int(SourceInfo.read(raw).max_image_pixels or DEFAULT_MAX_PIXELS)
    job = _Job(str(raw), cfg.image_size, cfg.mode, cfg.jpeg_quality, max_pixels)
    workers = min(cfg.workers or available_cpus(), total)
    log.info("%d images from %s with %d worker(s)", total, raw, workers)
    with (
        ShardWriter(out / SHARDS_DIR, cfg.images_per_shard) as writer,
        progress(total=total, desc="images", unit="img", log=log) as bar,
        closing(_outcomes(raw / MANIFEST, job, workers)) as outcomes,  # stops the pool
    ):

        def kept_rows() -> Iterator[dict[str, Any]]:
            for row, data, reason, detail in outcomes:
                bar.update()
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
    return quarantine


def _write_info(raw: Path, out: Path, cfg: PreprocessConfig, quarantine: Quarantine) -> None:
    Classes.read(raw).write(out)
    SourceInfo.read(raw).write(out)
    PreprocessInfo.from_json(
        {
            "image_size": cfg.image_size,
            "mode": cfg.mode,
            "filter": FILTER_NAME,
            "jpeg_quality": cfg.jpeg_quality,
            "images_per_shard": cfg.images_per_shard,
            "count": quarantine.kept,
        },
    ).write(out)
    quarantine.write(out)


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
    preprocess_dataset(args.raw, args.out, cfg.preprocess)  # logs its one summary line
    return 0
