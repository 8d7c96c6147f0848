"""ingest: fetch a dataset from anywhere, check every file, keep the good ones with a manifest.

Output (see fauna.data.dataset): images/<label>/<file> (original bytes), manifest.csv,
classes.json, source.json, quarantine.json + report.txt. Nothing is dropped
silently: every file or CSV row that goes in is either kept or quarantined with
a reason, and the report says that the counts reconcile.

The output is written through `fauna.step_output.step_output`: it appears complete or
not at all, and the download and unpacked archive live inside its temporary folder,
so a killed run leaves nothing the next run over the same `--out` does not clean.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from fauna.config import Config, DataConfig
from fauna.contracts import Classes, SourceInfo
from fauna.data.dataset import (
    INGEST_STEP,
    MANIFEST,
    QUARANTINE,
    REPORT,
    DatasetError,
    Quarantine,
    read_json,
    read_manifest,
    write_manifest,
)
from fauna.data.filetable import FileTable
from fauna.data.imagecheck import bomb_warnings_as_errors, inspect_image
from fauna.data.synthetic import SYNTHETIC_MARKER
from fauna.logs import progress
from fauna.sources import Limits, dataset_name, described, fetch, is_local, redact
from fauna.sources.layout import Layout, find_data_root, read_layout, visible
from fauna.step_output import step_output
from fauna.store import storage
from fauna.store.champion import fingerprint_sorted

log = logging.getLogger(__name__)

STEP = INGEST_STEP
IMAGES = "images"
# Quarantine reasons decided here (the layout's own are in fauna.sources.layout).
DUPLICATE = "duplicate"
CONFLICT = "conflicting labels"
SMALL_CLASS = "class too small"
MANIFEST_FIELDS = ["path", "label", "sha256", "width", "height", "format"]
COMPLETE_MARKER = "_COMPLETE"
# Inside the output's temporary folder: the download and the unpacked archive; the
# per-file table (fauna.data.filetable), removed before the output is published.
WORK_DIR = ".fauna-ingest-work"
FILE_TABLE = ".fauna-ingest-files.sqlite"


@dataclass
class IngestResult:
    out: Path
    source: str
    name: str
    version: str
    synthetic: bool
    total_in: int
    kept: int
    quarantined: int
    classes: list[str]
    per_class: dict[str, int]
    reasons: dict[str, int]
    # True when the data came from the content-addressed cache instead of the origin.
    from_cache: bool = False
    # Where the cache copy lives ("" when data.cache_uri is not set).
    cache_location: str = ""

    @property
    def report(self) -> Path:
        return self.out / REPORT

    def summary(self) -> str:
        """The step's one summary line (logged once, by `ingest_dataset`)."""
        origin = f"cache {self.cache_location}" if self.from_cache else self.source
        reasons = "".join(f"; {n} {reason}" for reason, n in self.reasons.items())
        cached = f"; cached at {self.cache_location}" if self.cache_location else ""
        return (
            f"{self.kept} images in {len(self.classes)} classes from {origin} (version "
            f"{self.version}{', SYNTHETIC' if self.synthetic else ''}): {self.total_in} in = "
            f"{self.kept} kept + {self.quarantined} quarantined{reasons} -> {self.out} "
            f"(report: {self.report}){'' if self.from_cache else cached}"
        )

    def metadata(self) -> dict[str, Any]:
        """Flat values for a KFP artifact's metadata."""
        return {
            "source": self.source,
            "name": self.name,
            "version": self.version,
            "synthetic": self.synthetic,
            "total_in": self.total_in,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "num_classes": len(self.classes),
            "from_cache": self.from_cache,
        }


def ingest_dataset(
    source: str, out: Path, cfg: DataConfig, *, refresh: bool = False
) -> IngestResult:
    """Fetch `source`, check every image, write the kept ones and the reports into `out`.

    With `cfg.cache_uri` set, a remote source already ingested with the same
    settings comes from the cache (nothing is fetched from the origin) unless
    `refresh`; every result is stored there under its content hash. `out`
    appears complete (with its completion marker) or not at all.
    """
    source = source.strip()
    if not source:
        raise DatasetError("no source given: pass --source or set data.source")
    out = Path(out)
    name = cfg.name or dataset_name(source)
    if is_local(source) and Path(source).expanduser().exists():
        _check_not_nested(Path(source).expanduser().resolve(), out.resolve(), source)
    if cfg.cache_uri:
        storage.check_bucket(cfg.cache_uri)
    from_cache, location = False, ""
    with _terminated_as_exit(), step_output(out, STEP) as tmp:
        if cfg.cache_uri and not is_local(source) and not refresh:
            location = _from_cache(source, tmp, cfg, name)
            from_cache = bool(location)
        if not from_cache:
            remote = _ingest_into(source, tmp, out.absolute(), cfg, name)
            if cfg.cache_uri:
                location = _store_in_cache(source, tmp, cfg, name, remote=remote)
    result = _result_from_dir(out, from_cache=from_cache)
    result.cache_location = location
    log.info("%s", result.summary())
    return result


@contextmanager
def _terminated_as_exit() -> Iterator[None]:
    """SIGTERM (a pod stopped, a run cancelled) unwinds like an error, so the temporary
    output and the download inside it are removed, not left for the next run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _ingest_into(source: str, tmp: Path, out: Path, cfg: DataConfig, name: str) -> bool:
    """Fetch, check and write the dataset into the temporary folder; True if remote."""
    shown = redact(source)
    work = tmp / WORK_DIR
    with bomb_warnings_as_errors(cfg.max_image_pixels), FileTable(tmp / FILE_TABLE) as table:
        fetched = fetch(source, work, Limits.from_config(cfg))
        root = fetched.root.resolve()
        _check_not_nested(root, out, shown)
        synthetic, data_root = find_data_root(root)
        if not [p for p in visible(data_root) if p.name != SYNTHETIC_MARKER]:
            raise DatasetError(f"empty dataset: {shown} holds no files")
        _count_files(data_root, cfg)
        layout = read_layout(data_root, cfg, table, fetched.labels_csv)
        _check_size(layout, cfg)
        quarantine = Quarantine(step=STEP)
        for member, reason, detail in fetched.refused:
            quarantine.reject(member, reason, detail)
        for entry in layout.rejected.items():
            quarantine.reject(entry["item"], entry["reason"], entry["detail"])
        _inspect_all(table, cfg)
        sizes = _select(table, cfg, quarantine)
        quarantine.total_in = len(fetched.refused) + layout.rejected.count + len(table)
        quarantine.kept = sum(sizes.values())
        if not quarantine.kept:
            raise DatasetError(_empty_message(shown, quarantine))
        _check_two_classes(sizes, shown, layout)
        move = root.is_relative_to(work.resolve())
        write_manifest(tmp / MANIFEST, _write_images(table, tmp, move), MANIFEST_FIELDS)
        shutil.rmtree(work, ignore_errors=True)
        version = content_version((path, sha) for path, _, sha in table.written("path"))
        # What the data is (the champion's dataset key), whatever the folder or archive is called.
        content = fingerprint_sorted((label, sha) for _, label, sha in table.written("label"))
    Classes(tuple(sorted(sizes))).write(tmp)
    info = {
        "source": shown,
        "name": name,
        "synthetic": synthetic,
        "version": version,
        "content": content,
    }
    # The pixel limit ingest checked with: preprocess applies the same one.
    SourceInfo.from_json({**info, "max_image_pixels": cfg.max_image_pixels}).write(tmp)
    quarantine.write(tmp)
    _append_report(tmp, quarantine, shown, version, synthetic, sizes, cfg)
    return fetched.remote


def _count_files(root: Path, cfg: DataConfig) -> None:
    """Refuse a tree over `data.max_files` while walking it, before anything is listed."""
    count, folders = 0, [root]
    while folders:
        with os.scandir(folders.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(Path(entry.path))
                else:
                    count += 1
                    if count > cfg.max_files:
                        limits = Limits.from_config(cfg)
                        raise limits.exceeded("the dataset has more files", count, "max_files")


def _check_size(layout: Layout, cfg: DataConfig) -> None:
    """The limits on the dataset as a whole (a folder, an S3 tree, what Kaggle unpacked)."""
    limits = Limits.from_config(cfg)
    files = len(layout.candidates) + layout.rejected.count
    if files > cfg.max_files:
        raise limits.exceeded("the dataset has more files", files, "max_files")
    size = sum(os.stat(path).st_size for batch in layout.candidates.paths() for _, path in batch)
    if size > cfg.max_dataset_bytes:
        raise limits.exceeded(f"the images total {size} bytes", size, "max_dataset_bytes")


def _check_two_classes(sizes: dict[str, int], shown: str, layout: Layout) -> None:
    """A classifier needs two classes: one class is a layout mistake, said in one line."""
    if len(sizes) >= 2:
        return
    ((label, count),) = sizes.items()
    if layout.kind == "csv":
        hint = "the label CSV names one label only"
    elif layout.unused_csvs:
        hint = (
            f"the only class folder is {label}/ while {', '.join(layout.unused_csvs)} beside it "
            "labels images: set data.layout=csv (and data.labels_csv=<name> if several)"
        )
    else:
        hint = (
            f"the only class folder is {label}/: put each class's images in a folder of its "
            "own, or add a label CSV (columns such as file,label) beside it"
        )
    raise DatasetError(
        f"{shown} gives one class only ({label}, {count} images): a classifier needs at least "
        f"two; {hint}"
    )


def content_version(files: Iterable[tuple[str, str]]) -> str:
    """A short content hash over the kept files' (path, sha256), given sorted by path."""
    digest = hashlib.sha256()
    for path, sha in files:
        digest.update(f"{path}\t{sha}\n".encode())
    return digest.hexdigest()[:16]


# -- checking and choosing ---------------------------------------------------------------------


def _inspect_all(table: FileTable, cfg: DataConfig) -> None:
    """Hash + fully decode every file; threads overlap I/O, hashing and Pillow's decoders.

    Bounded: one batch of paths and of results at a time, recorded in `table`.
    """
    if not len(table):
        return
    from joblib.externals.loky import cpu_count

    workers = min(32, cpu_count() * 2)

    def inspect(entry: tuple[int, str]) -> tuple[int, bool, str, int, int, str, str, str]:
        i, path = entry
        c = inspect_image(path, cfg.max_image_pixels, cfg.max_file_bytes)
        return i, c.ok, c.sha256, c.width, c.height, c.format, c.reason, c.detail

    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        progress(total=len(table), desc="check", unit="img", log=log) as bar,
    ):
        for batch in table.paths(workers * 64):
            table.record(list(pool.map(inspect, batch)))
            bar.update(len(batch))


def _select(table: FileTable, cfg: DataConfig, quarantine: Quarantine) -> dict[str, int]:
    """Drop broken images, duplicates, conflicting copies and too-small classes; the kept
    files' count per class.

    Duplicates are found by a sort over the table by sha256 (one group in memory at a
    time); the quarantine lists, as before: the broken files by item, then the duplicate
    and conflict groups in the order of their first item, then the too-small classes.
    """
    for item, reason, detail in table.refused():
        quarantine.reject(item, reason, detail)
    for group in table.by_content():
        (first_id, first_item, _), rest = group[0], group[1:]
        labels = sorted({label for _, _, label in group})
        if len(labels) > 1:
            items = ", ".join(item for _, item, _ in group)
            detail = f"same content labelled {' and '.join(labels)}: {items}"
            rejects = [(i, item, CONFLICT, detail) for i, item, _ in group]
        else:
            table.keep([first_id])
            detail = f"same content as {first_item}"
            rejects = [(i, item, DUPLICATE, detail) for i, item, _ in rest]
        if rejects:
            table.reject_grouped((first_id, first_item), rejects)
    for item, reason, detail in table.grouped_rejects():
        quarantine.reject(item, reason, detail)
    sizes = table.kept_sizes()
    small = {label for label, n in sizes.items() if n < cfg.min_images_per_class}
    for item, _, _, label, *_ in table.kept("item"):
        if label in small:
            detail = (
                f"{label} has {sizes[label]} image(s) "
                f"< data.min_images_per_class={cfg.min_images_per_class}"
            )
            quarantine.reject(item, SMALL_CLASS, detail)
    table.unkeep(small)
    return {label: n for label, n in sizes.items() if label not in small}


# -- writing -----------------------------------------------------------------------------------


def _check_not_nested(root: Path, out: Path, shown: str) -> None:
    if out == root or out.is_relative_to(root) or root.is_relative_to(out):
        raise DatasetError(f"the output folder {out} and the source {shown} must not overlap")


def _write_images(table: FileTable, out: Path, move: bool) -> Iterator[dict[str, Any]]:
    """images/<label>/<name>, original bytes (moved out of a download, copied from a folder):
    the kept files, by label and name; yields their manifest rows."""
    sizes = table.kept_sizes()
    bar = progress(total=sum(sizes.values()), desc="write", unit="img", log=log)
    for _, path, name, label, sha, width, height, fmt in table.kept("label"):
        rel = f"{IMAGES}/{label}/{name}"
        dest = out / rel
        # Two source folders with the same file name in one class: only this step writes
        # into images/, so a file already there is one written before.
        if os.path.lexists(dest):
            pure = PurePosixPath(rel)
            rel = str(pure.with_name(f"{pure.stem}_{sha[:8]}{pure.suffix}"))
            dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(path, dest)
        else:
            shutil.copyfile(path, dest)
        table.wrote(rel, label, sha)
        bar.update()
        yield {"path": rel, "label": label, "sha256": sha, "width": width, "height": height,
               "format": fmt}  # fmt: skip
    bar.close()


def _append_report(
    out: Path,
    quarantine: Quarantine,
    source: str,
    version: str,
    synthetic: bool,
    per_class: dict[str, int],
    cfg: DataConfig,
) -> None:
    lines = [
        f"counts reconcile: {'yes' if quarantine.reconciles else 'NO'}",
        f"source: {source}" + ("  (SYNTHETIC data, not real photos)" if synthetic else ""),
        f"version: {version}",
        f"classes: {len(per_class)} (images per class: min {min(per_class.values())}, "
        f"max {max(per_class.values())})",
    ]
    absent = [name for name in cfg.classes if name not in per_class]
    if absent:
        lines.append(f"classes in data.classes with no kept image: {', '.join(absent)}")
    with (out / REPORT).open("a") as fh:
        fh.write("\n".join(lines) + "\n")


def _empty_message(shown: str, quarantine: Quarantine) -> str:
    if not quarantine.total_in:
        return f"empty dataset: no image files found in {shown}"
    reasons = ", ".join(f"{n} {reason}" for reason, n in quarantine.reasons.items())
    example = quarantine.first or {"item": shown, "reason": "?", "detail": ""}
    return (
        f"empty dataset: no valid image in {shown} ({quarantine.total_in} quarantined: {reasons}; "
        f"e.g. {example['item']}: {example['detail'] or example['reason']})"
    )


def _required(folder: Path, info: SourceInfo, key: str) -> Any:
    """A key ingest always writes into source.json: one line where a folder lacks it."""
    if key not in info.rest:
        where = folder / info.FILE
        raise DatasetError(f"{where} has no {key!r}: not an ingest output (re-run ingest)")
    return info.rest[key]


def _result_from_dir(out: Path, from_cache: bool = False) -> IngestResult:
    info = SourceInfo.read(out)
    report = read_json(out / QUARANTINE)
    per_class = dict(sorted(Counter(row["label"] for row in read_manifest(out / MANIFEST)).items()))
    return IngestResult(
        out=out,
        source=_required(out, info, "source"),
        name=_required(out, info, "name"),
        version=_required(out, info, "version"),
        synthetic=bool(_required(out, info, "synthetic")),
        total_in=report["total_in"],
        kept=report["kept"],
        quarantined=report["quarantined"],
        classes=list(Classes.read(out).names),
        per_class=per_class,
        reasons=report["reasons"],
        from_cache=from_cache,
    )


# -- content-addressed cache --------------------------------------------------------------------


def _cache_index(source: str, cfg: DataConfig, name: str) -> str:
    """s3://.../<name>/sources/<key>.json: the version a source (with these settings) gave.

    The key hashes the full source (a presigned URL's query selects the object); only the
    redacted source is ever stored.
    """
    settings = {
        "source": source,
        "layout": cfg.layout,
        "csv_id_column": cfg.csv_id_column,
        "csv_label_column": cfg.csv_label_column,
        "labels_csv": cfg.labels_csv,
        "classes": sorted(cfg.classes),
        "min_images_per_class": cfg.min_images_per_class,
        "max_image_pixels": cfg.max_image_pixels,
        "max_file_bytes": cfg.max_file_bytes,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return str(storage.parse_s3_uri(cfg.cache_uri).join(name, "sources", f"{key}.json"))


def _cache_version(cfg: DataConfig, name: str, version: str) -> str:
    return str(storage.parse_s3_uri(cfg.cache_uri).join(name, version))


def _from_cache(source: str, tmp: Path, cfg: DataConfig, name: str) -> str:
    """Fill `tmp` from the cache when this source was ingested before; its location, or ""."""
    index = _cache_index(source, cfg, name)
    if not storage.exists(index):
        return ""
    version = json.loads(storage.read_text(index))["version"]
    location = _cache_version(cfg, name, version)
    if not storage.exists(f"{location}/{COMPLETE_MARKER}"):
        return ""
    log.info("%s unchanged since version %s: using %s", redact(source), version, location)
    storage.download_dir(location, tmp)
    (tmp / COMPLETE_MARKER).unlink(missing_ok=True)
    info = SourceInfo.read(tmp)
    if info.version != version:
        raise DatasetError(f"cache entry {location} is inconsistent: re-run with --refresh")
    SourceInfo.from_json({**info.rest, "source": redact(source), "name": name}).write(tmp)
    return location


def _store_in_cache(source: str, tmp: Path, cfg: DataConfig, name: str, remote: bool) -> str:
    """Upload the kept dataset under its version (once); remember which version a source gave."""
    version = _required(tmp, SourceInfo.read(tmp), "version")
    location = _cache_version(cfg, name, version)
    if not storage.exists(f"{location}/{COMPLETE_MARKER}"):
        storage.upload_dir(tmp, location)
        storage.write_text(f"{location}/{COMPLETE_MARKER}", version + "\n")
    if remote:
        entry = {"source": redact(source), "version": version}
        storage.write_text(
            _cache_index(source, cfg, name), json.dumps(entry), content_type="application/json"
        )
    return location


# -- CLI ---------------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--source",
        help=f"{described()} (default: data.source)",
    )
    parser.add_argument("--out", required=True, help="output folder (the raw dataset)")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="fetch from the origin even if data.cache_uri holds this source already",
    )


def run(args: Any, cfg: Config) -> int:
    """The summary is `ingest_dataset`'s one log line (the KFP component shows the same)."""
    ingest_dataset(args.source or cfg.data.source, Path(args.out), cfg.data, refresh=args.refresh)
    return 0
