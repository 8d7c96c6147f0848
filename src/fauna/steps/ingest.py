"""ingest: fetch a dataset from anywhere, check every file, keep the good ones with a manifest.

Output (see fauna.dataset): images/<label>/<file> (original bytes), manifest.csv,
classes.json, source.json, quarantine.json + report.txt. Nothing is dropped
silently: every file or CSV row that goes in is either kept or quarantined with
a reason, and the report says that the counts reconcile.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tqdm import tqdm

from fauna import storage
from fauna.config import Config, DataConfig
from fauna.dataset import (
    CLASSES,
    MANIFEST,
    QUARANTINE,
    REPORT,
    SOURCE,
    DatasetError,
    Quarantine,
    read_json,
    read_manifest,
    write_json,
    write_manifest,
)
from fauna.imagecheck import (
    IMAGE_EXTENSIONS,
    ImageCheck,
    bomb_warnings_as_errors,
    inspect_image,
    looks_like_image,
)
from fauna.steps.ingest_sources import UNSAFE_MEMBER, fetch, source_kind
from fauna.synthetic import SYNTHETIC_MARKER

IMAGES = "images"
MANIFEST_FIELDS = ["path", "label", "sha256", "width", "height", "format"]
COMPLETE_MARKER = "_COMPLETE"
# Column pairs (file, label) a label CSV may use, matched case-insensitively.
CSV_SCHEMAS = (("image_id", "animal"), ("file", "label"))
# Top folders that are splits of a dataset, not classes: their class folders are pooled.
SPLIT_FOLDERS = {"train", "training", "val", "valid", "validation", "test", "testing"}

# Quarantine reasons (image-level ones live in fauna.imagecheck).
DUPLICATE = "duplicate"
CONFLICT = "conflicting labels"
MISSING_FILE = "missing file"
EMPTY_LABEL = "empty label"
UNKNOWN_LABEL = "unknown label"
INVALID_LABEL = "invalid label"
NOT_IN_CSV = "not in CSV"
NO_CLASS_FOLDER = "no class folder"
UNSUPPORTED_FILE = "unsupported file type"
SMALL_CLASS = "class too small"


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

    def metadata(self) -> dict[str, Any]:
        """Flat values for a KFP artifact's metadata."""
        return {
            "source": self.source,
            "version": self.version,
            "synthetic": self.synthetic,
            "total_in": self.total_in,
            "kept": self.kept,
            "quarantined": self.quarantined,
            "num_classes": len(self.classes),
            "from_cache": self.from_cache,
        }


@dataclass
class _Candidate:
    """One file to check: `item` names it in reports, `rel` is its name inside its class."""

    item: str
    path: Path
    rel: str
    label: str


@dataclass
class _Layout:
    candidates: list[_Candidate] = field(default_factory=list)
    # (item, reason, detail) decided before any file is opened.
    rejected: list[tuple[str, str, str]] = field(default_factory=list)


def ingest_dataset(
    source: str, out: Path, cfg: DataConfig, *, refresh: bool = False
) -> IngestResult:
    """Fetch `source`, check every image, write the kept ones and the reports into `out`.

    With `cfg.cache_uri` set, a remote source already ingested with the same
    settings comes from the cache (nothing is fetched from the origin) unless
    `refresh`; every result is stored there under its content hash.
    """
    source = source.strip()
    if not source:
        raise DatasetError("no source given: pass --source or set data.source")
    out = Path(out)
    _check_out_usable(out)
    kind = source_kind(source)
    if cfg.cache_uri:
        storage.check_bucket(cfg.cache_uri)
        if kind != "local" and not refresh:
            cached = _from_cache(source, out, cfg)
            if cached:
                return cached
    work_parent = out.resolve().parent
    work_parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(prefix=".fauna-ingest-", dir=work_parent) as work,
        bomb_warnings_as_errors(),
    ):
        fetched = fetch(source, Path(work))
        root = fetched.root.resolve()
        _check_not_nested(root, out.resolve(), source)
        _prepare_out(out)
        synthetic, data_root = _find_data_root(root)
        if not [p for p in _visible(data_root) if p.name != SYNTHETIC_MARKER]:
            raise DatasetError(f"empty dataset: {source} holds no files")
        layout = _read_layout(data_root, cfg)
        quarantine = Quarantine(step="ingest")
        for member, why in fetched.refused:
            quarantine.reject(member, UNSAFE_MEMBER, why)
        for item, reason, detail in layout.rejected:
            quarantine.reject(item, reason, detail)
        checks = _inspect_all(layout.candidates, cfg.max_image_pixels)
        kept = _select(layout.candidates, checks, cfg, quarantine)
        quarantine.total_in = len(fetched.refused) + len(layout.rejected) + len(layout.candidates)
        quarantine.kept = len(kept)
        if not kept:
            quarantine.write(out)
            raise DatasetError(_empty_message(source, quarantine, out))
        move = root.is_relative_to(Path(work).resolve())
        rows = _write_images(kept, out, move=move)
    version = content_version(rows)
    classes = sorted({row["label"] for row in rows})
    write_manifest(out / MANIFEST, rows, MANIFEST_FIELDS)
    write_json(out / CLASSES, classes)
    write_json(
        out / SOURCE,
        {"source": source, "name": cfg.name, "synthetic": synthetic, "version": version},
    )
    quarantine.write(out)
    _append_report(out, quarantine, source, version, synthetic, rows, cfg)
    result = _result_from_dir(out)
    if cfg.cache_uri:
        result.cache_location = _store_in_cache(source, out, cfg, version, remote=fetched.remote)
    return result


def content_version(rows: list[dict[str, Any]]) -> str:
    """A short content hash over the sorted (path, sha256) of the kept files."""
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda r: r["path"]):
        digest.update(f"{row['path']}\t{row['sha256']}\n".encode())
    return digest.hexdigest()[:16]


# -- where the data is and how it is labelled -------------------------------------------------


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not _hidden(p.name))


def _find_data_root(root: Path) -> tuple[bool, Path]:
    """Step down through wrapper folders (an archive's top folder); note any SYNTHETIC marker."""
    synthetic = False
    while True:
        synthetic = synthetic or (root / SYNTHETIC_MARKER).is_file()
        entries = [p for p in _visible(root) if p.name != SYNTHETIC_MARKER]
        if len(entries) == 1 and entries[0].is_dir():
            inner = _visible(entries[0])
            if any(p.is_dir() or p.suffix.lower() == ".csv" for p in inner):
                root = entries[0]
                continue
        return synthetic, root


def _label_csvs(root: Path) -> list[tuple[Path, str, str]]:
    """Top-level CSVs whose header names a (file, label) column pair."""
    found = []
    for path in sorted(root.glob("*.csv")):
        with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        columns = {name.strip().lower(): name for name in header}
        for file_col, label_col in CSV_SCHEMAS:
            if file_col in columns and label_col in columns:
                found.append((path, columns[file_col], columns[label_col]))
                break
    return found


def _read_layout(root: Path, cfg: DataConfig) -> _Layout:
    csvs = _label_csvs(root)
    class_dirs = [p for p in _visible(root) if p.is_dir()]
    layout = cfg.layout
    if layout in ("auto", "csv") and len(csvs) > 1:
        names = ", ".join(p.name for p, _, _ in csvs)
        raise DatasetError(
            f"ambiguous dataset layout in {root}: several label CSVs ({names}); "
            "keep one, or set data.layout=folders"
        )
    if layout == "auto":
        layout = "csv" if csvs else "folders"
    if layout == "csv" and not csvs:
        raise DatasetError(
            f"no label CSV in {root}: expected a CSV with columns Image_id,Animal or file,label"
        )
    if layout == "folders" and not class_dirs:
        other = [p.name for p in root.glob("*.csv")]
        hint = f" ({', '.join(other)} has no Image_id,Animal or file,label header)" if other else ""
        raise DatasetError(
            f"no dataset layout found in {root}: expected one folder per class or a label CSV{hint}"
        )
    if layout == "csv":
        return _csv_layout(root, *csvs[0], cfg)
    return _folders_layout(root, class_dirs, cfg)


def _label_problem(label: str, cfg: DataConfig) -> tuple[str, str]:
    """(reason, detail) when a label cannot be used, else ("", "")."""
    if not label:
        return EMPTY_LABEL, ""
    if label in (".", "..") or re.search(r"[/\\\x00]", label):
        return INVALID_LABEL, f"{label!r} cannot name a folder"
    if cfg.classes and label not in cfg.classes:
        return UNKNOWN_LABEL, f"{label!r} is not in data.classes"
    return "", ""


def _files_under(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(_hidden(part) for part in p.relative_to(folder).parts)
    )


def _folders_layout(root: Path, class_dirs: list[Path], cfg: DataConfig) -> _Layout:
    """One folder per class; train/ val/ test/ folders that each hold classes are merged."""
    groups = [(root, class_dirs, "")]
    if all(d.name.lower() in SPLIT_FOLDERS for d in class_dirs):
        groups = [(d, [c for c in _visible(d) if c.is_dir()], d.name) for d in class_dirs]
    layout = _Layout()
    for folder, classes, split in groups:
        for path in _visible(folder):
            if path.is_file() and looks_like_image(path):
                item = path.relative_to(root).as_posix()
                layout.rejected.append((item, NO_CLASS_FOLDER, "not inside a class folder"))
        for class_dir in classes:
            label = class_dir.name.strip()
            reason, detail = _label_problem(label, cfg)
            for path in _files_under(class_dir):
                item = path.relative_to(root).as_posix()
                if reason:
                    layout.rejected.append((item, reason, detail))
                elif not looks_like_image(path):
                    layout.rejected.append((item, UNSUPPORTED_FILE, path.suffix or "no extension"))
                else:
                    rel = path.relative_to(class_dir).as_posix()
                    rel = f"{split}/{rel}" if split else rel
                    layout.candidates.append(_Candidate(item, path, rel, label))
    return layout


def _csv_layout(root: Path, csv_path: Path, file_col: str, label_col: str, cfg: DataConfig):
    """Rows of the CSV; images in the folder named like it (train.csv -> train/) or beside it."""
    layout = _Layout()
    image_dir = root / csv_path.stem
    bases = [image_dir, root] if image_dir.is_dir() else [root]
    named: set[Path] = set()
    with csv_path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        for line, row in enumerate(csv.DictReader(fh), start=2):
            name = (row.get(file_col) or "").strip().replace("\\", "/")
            label = (row.get(label_col) or "").strip()
            where = f"{csv_path.name} line {line}"
            found = _resolve(name, bases) if name else None
            if found is None:
                item = f"{where}: {name or '(no file name)'}"
                layout.rejected.append((item, MISSING_FILE, f"not found under {bases[0].name}/"))
                continue
            path, base = found
            named.add(path)
            item = path.relative_to(root).as_posix()
            reason, detail = _label_problem(label, cfg)
            if reason:
                layout.rejected.append((item, reason, f"{where}: {detail}".rstrip(": ")))
                continue
            rel = path.relative_to(base).as_posix()
            layout.candidates.append(_Candidate(item, path, rel, label))
    for path in _files_under(bases[0]):
        if looks_like_image(path) and path not in named:
            item = path.relative_to(root).as_posix()
            layout.rejected.append((item, NOT_IN_CSV, f"no row in {csv_path.name}"))
    return layout


def _resolve(name: str, bases: list[Path]) -> tuple[Path, Path] | None:
    """The file a CSV row names (trying image extensions when it has none), inside a base."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    tries = [str(pure)]
    if not pure.suffix:
        tries += [f"{pure}{ext}" for ext in sorted(IMAGE_EXTENSIONS)]
    for base in bases:
        for candidate in tries:
            if (base / candidate).is_file():
                return base / candidate, base
    return None


# -- checking and choosing ---------------------------------------------------------------------


def _inspect_all(candidates: list[_Candidate], max_pixels: int) -> list[ImageCheck]:
    """Hash + fully decode every file; threads overlap I/O, hashing and Pillow's decoders."""
    if not candidates:
        return []
    workers = min(32, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda c: inspect_image(c.path, max_pixels), candidates)
        return list(
            tqdm(results, total=len(candidates), desc="ingest: check", unit="img", file=sys.stderr)
        )


def _select(
    candidates: list[_Candidate],
    checks: list[ImageCheck],
    cfg: DataConfig,
    quarantine: Quarantine,
) -> list[tuple[_Candidate, ImageCheck]]:
    """Drop broken images, duplicates, conflicting copies and too-small classes."""
    by_hash: dict[str, list[tuple[_Candidate, ImageCheck]]] = defaultdict(list)
    for cand, check in sorted(zip(candidates, checks, strict=True), key=lambda cc: cc[0].item):
        if check.ok:
            by_hash[check.sha256].append((cand, check))
        else:
            quarantine.reject(cand.item, check.reason, check.detail)
    kept = []
    for group in by_hash.values():
        labels = sorted({cand.label for cand, _ in group})
        if len(labels) > 1:
            items = ", ".join(cand.item for cand, _ in group)
            for cand, _ in group:
                detail = f"same content labelled {' and '.join(labels)}: {items}"
                quarantine.reject(cand.item, CONFLICT, detail)
            continue
        kept.append(group[0])
        for cand, _ in group[1:]:
            quarantine.reject(cand.item, DUPLICATE, f"same content as {group[0][0].item}")
    sizes = Counter(cand.label for cand, _ in kept)
    small = {label for label, n in sizes.items() if n < cfg.min_images_per_class}
    for cand, _ in kept:
        if cand.label in small:
            detail = (
                f"{cand.label} has {sizes[cand.label]} image(s) "
                f"< data.min_images_per_class={cfg.min_images_per_class}"
            )
            quarantine.reject(cand.item, SMALL_CLASS, detail)
    return sorted(
        ((c, k) for c, k in kept if c.label not in small), key=lambda ck: (ck[0].label, ck[0].rel)
    )


# -- writing -----------------------------------------------------------------------------------


def _check_not_nested(root: Path, out: Path, source: str) -> None:
    if out == root or out.is_relative_to(root) or root.is_relative_to(out):
        raise DatasetError(f"the output folder {out} and the source {source} must not overlap")


def _check_out_usable(out: Path) -> None:
    """An empty or new folder, or an earlier ingest output; never someone else's files."""
    if out.is_file():
        raise DatasetError(f"output {out} is a file: --out must be a folder")
    if out.is_dir() and any(out.iterdir()):
        if not ((out / MANIFEST).is_file() and (out / SOURCE).is_file()):
            raise DatasetError(f"output folder {out} is not empty: choose a new --out")


def _prepare_out(out: Path) -> None:
    """Remove what an earlier ingest wrote there (checked by `_check_out_usable`)."""
    _check_out_usable(out)
    shutil.rmtree(out / IMAGES, ignore_errors=True)
    for name in (MANIFEST, CLASSES, SOURCE, QUARANTINE, REPORT):
        (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _write_images(
    kept: list[tuple[_Candidate, ImageCheck]], out: Path, move: bool
) -> list[dict[str, Any]]:
    """images/<label>/<name>, original bytes (moved out of a download, copied from a folder)."""
    rows = []
    taken: set[str] = set()
    for cand, check in tqdm(kept, desc="ingest: write", unit="img", file=sys.stderr):
        rel = f"{IMAGES}/{cand.label}/{cand.rel}"
        if rel in taken:  # two source folders with the same file name in one class
            pure = PurePosixPath(rel)
            rel = str(pure.with_name(f"{pure.stem}_{check.sha256[:8]}{pure.suffix}"))
        taken.add(rel)
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if move:
            os.replace(cand.path, dest)
        else:
            shutil.copyfile(cand.path, dest)
        rows.append(
            {
                "path": rel,
                "label": cand.label,
                "sha256": check.sha256,
                "width": check.width,
                "height": check.height,
                "format": check.format,
            }
        )
    return rows


def _append_report(
    out: Path,
    quarantine: Quarantine,
    source: str,
    version: str,
    synthetic: bool,
    rows: list[dict[str, Any]],
    cfg: DataConfig,
) -> None:
    per_class = Counter(row["label"] for row in rows)
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


def _empty_message(source: str, quarantine: Quarantine, out: Path) -> str:
    if not quarantine.total_in:
        return f"empty dataset: no image files found in {source}"
    reasons = ", ".join(f"{n} {reason}" for reason, n in quarantine.reasons.items())
    return (
        f"empty dataset: no valid image in {source} "
        f"({quarantine.total_in} quarantined: {reasons}); see {out / REPORT}"
    )


def _result_from_dir(out: Path, from_cache: bool = False) -> IngestResult:
    info = read_json(out / SOURCE)
    report = read_json(out / QUARANTINE)
    per_class = dict(sorted(Counter(row["label"] for row in read_manifest(out / MANIFEST)).items()))
    return IngestResult(
        out=out,
        source=info["source"],
        name=info["name"],
        version=info["version"],
        synthetic=bool(info["synthetic"]),
        total_in=report["total_in"],
        kept=report["kept"],
        quarantined=report["quarantined"],
        classes=read_json(out / CLASSES),
        per_class=per_class,
        reasons=report["reasons"],
        from_cache=from_cache,
    )


# -- content-addressed cache --------------------------------------------------------------------


def _cache_index(source: str, cfg: DataConfig) -> str:
    """s3://.../<name>/sources/<key>.json: the version a source (with these settings) gave."""
    settings = {
        "source": source,
        "layout": cfg.layout,
        "classes": sorted(cfg.classes),
        "min_images_per_class": cfg.min_images_per_class,
        "max_image_pixels": cfg.max_image_pixels,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()
    return str(storage.parse_s3_uri(cfg.cache_uri).join(cfg.name, "sources", f"{key}.json"))


def _cache_version(cfg: DataConfig, version: str) -> str:
    return str(storage.parse_s3_uri(cfg.cache_uri).join(cfg.name, version))


def _from_cache(source: str, out: Path, cfg: DataConfig) -> IngestResult | None:
    index = _cache_index(source, cfg)
    if not storage.exists(index):
        return None
    version = json.loads(storage.read_text(index))["version"]
    location = _cache_version(cfg, version)
    if not storage.exists(f"{location}/{COMPLETE_MARKER}"):
        return None
    print(f"ingest: {source} unchanged since version {version}: using {location}", file=sys.stderr)
    _prepare_out(out)
    storage.download_dir(location, out)
    (out / COMPLETE_MARKER).unlink(missing_ok=True)
    info = read_json(out / SOURCE)
    if info.get("version") != version:
        raise DatasetError(f"cache entry {location} is inconsistent: re-run with --refresh")
    info["source"] = source
    write_json(out / SOURCE, info)
    result = _result_from_dir(out, from_cache=True)
    result.cache_location = location
    return result


def _store_in_cache(source: str, out: Path, cfg: DataConfig, version: str, remote: bool) -> str:
    """Upload the kept dataset under its version (once); remember which version a source gave."""
    location = _cache_version(cfg, version)
    if not storage.exists(f"{location}/{COMPLETE_MARKER}"):
        storage.upload_dir(out, location)
        storage.write_text(f"{location}/{COMPLETE_MARKER}", version + "\n")
    if remote:
        entry = {"source": source, "version": version}
        storage.write_text(
            _cache_index(source, cfg), json.dumps(entry), content_type="application/json"
        )
    return location


# -- CLI ---------------------------------------------------------------------------------------


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--source",
        help="kaggle:owner/dataset, a folder, an archive, s3://bucket/prefix or an http(s) URL "
        "(default: data.source)",
    )
    parser.add_argument("--out", required=True, help="output folder (the raw dataset)")
    parser.add_argument(
        "--refresh",
        action="store_true",
        help="fetch from the origin even if data.cache_uri holds this source already",
    )


def run(args: Any, cfg: Config) -> int:
    result = ingest_dataset(
        args.source or cfg.data.source, Path(args.out), cfg.data, refresh=args.refresh
    )
    origin = f"cache {result.cache_location}" if result.from_cache else result.source
    print(
        f"ingested {result.kept} images in {len(result.classes)} classes from {origin} "
        f"(version {result.version}{', SYNTHETIC' if result.synthetic else ''})"
    )
    print(
        f"{result.total_in} in = {result.kept} kept + {result.quarantined} quarantined"
        + "".join(f"; {n} {reason}" for reason, n in result.reasons.items())
    )
    if result.cache_location and not result.from_cache:
        print(f"cached at {result.cache_location}")
    print(f"report: {result.report}")
    return 0
