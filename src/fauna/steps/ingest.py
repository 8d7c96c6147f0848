"""ingest: fetch a dataset from anywhere, check every file, keep the good ones with a manifest.

Output (see fauna.dataset): images/<label>/<file> (original bytes), manifest.csv,
classes.json, source.json, quarantine.json + report.txt. Nothing is dropped
silently: every file or CSV row that goes in is either kept or quarantined with
a reason, and the report says that the counts reconcile.

The output is written through `fauna.outputs.step_output`: it appears complete or
not at all, and the download and unpacked archive live inside its temporary folder,
so a killed run leaves nothing the next run over the same `--out` does not clean.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import re
import shutil
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
    INGEST_STEP,
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
from fauna.outputs import step_output
from fauna.steps.ingest_sources import (
    Limits,
    dataset_name,
    fetch,
    redact,
    source_kind,
)
from fauna.synthetic import SYNTHETIC_MARKER

log = logging.getLogger(__name__)

STEP = INGEST_STEP
IMAGES = "images"
MANIFEST_FIELDS = ["path", "label", "sha256", "width", "height", "format"]
COMPLETE_MARKER = "_COMPLETE"
# Inside the output's temporary folder: the download and the unpacked archive.
WORK_DIR = ".fauna-ingest-work"
# Label CSV columns, matched case-insensitively, first match wins (data.csv_*_column override).
ID_COLUMNS = ("file", "filename", "path", "image", "image_id", "id")
LABEL_COLUMNS = ("label", "class", "species", "animal", "category")
# Folder names that hold a CSV's images when no folder is named like the CSV.
IMAGE_FOLDERS = {"images", "imgs", "img", "pictures", "photos"}
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
            "name": self.name,
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
    kind: str = "folders"  # folders | csv
    candidates: list[_Candidate] = field(default_factory=list)
    # (item, reason, detail) decided before any file is opened.
    rejected: list[tuple[str, str, str]] = field(default_factory=list)


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
    if source_kind(source) == "local" and Path(source).expanduser().exists():
        _check_not_nested(Path(source).expanduser().resolve(), out.resolve(), source)
    if cfg.cache_uri:
        storage.check_bucket(cfg.cache_uri)
    from_cache, location = False, ""
    with step_output(out, STEP) as tmp:
        if cfg.cache_uri and source_kind(source) != "local" and not refresh:
            location = _from_cache(source, tmp, cfg, name)
            from_cache = bool(location)
        if not from_cache:
            remote = _ingest_into(source, tmp, out.absolute(), cfg, name)
            if cfg.cache_uri:
                location = _store_in_cache(source, tmp, cfg, name, remote=remote)
    result = _result_from_dir(out, from_cache=from_cache)
    result.cache_location = location
    return result


def _ingest_into(source: str, tmp: Path, out: Path, cfg: DataConfig, name: str) -> bool:
    """Fetch, check and write the dataset into the temporary folder; True if remote."""
    shown = redact(source)
    work = tmp / WORK_DIR
    with bomb_warnings_as_errors(cfg.max_image_pixels):
        fetched = fetch(source, work, Limits.from_config(cfg))
        root = fetched.root.resolve()
        _check_not_nested(root, out, shown)
        synthetic, data_root = _find_data_root(root)
        if not [p for p in _visible(data_root) if p.name != SYNTHETIC_MARKER]:
            raise DatasetError(f"empty dataset: {shown} holds no files")
        layout = _read_layout(data_root, cfg)
        _check_size(layout, cfg)
        quarantine = Quarantine(step=STEP)
        for member, reason, detail in fetched.refused:
            quarantine.reject(member, reason, detail)
        for item, reason, detail in layout.rejected:
            quarantine.reject(item, reason, detail)
        checks = _inspect_all(layout.candidates, cfg)
        kept = _select(layout.candidates, checks, cfg, quarantine)
        quarantine.total_in = len(fetched.refused) + len(layout.rejected) + len(layout.candidates)
        quarantine.kept = len(kept)
        if not kept:
            raise DatasetError(_empty_message(shown, quarantine))
        _check_two_classes(kept, shown, layout)
        move = root.is_relative_to(work.resolve())
        rows = _write_images(kept, tmp, move=move)
    shutil.rmtree(work, ignore_errors=True)
    version = content_version(rows)
    write_manifest(tmp / MANIFEST, rows, MANIFEST_FIELDS)
    write_json(tmp / CLASSES, sorted({row["label"] for row in rows}))
    info = {"source": shown, "name": name, "synthetic": synthetic, "version": version}
    # The pixel limit ingest checked with: preprocess applies the same one.
    write_json(tmp / SOURCE, {**info, "max_image_pixels": cfg.max_image_pixels})
    quarantine.write(tmp)
    _append_report(tmp, quarantine, shown, version, synthetic, rows, cfg)
    log.info("%s", quarantine.summary())
    return fetched.remote


def _check_size(layout: _Layout, cfg: DataConfig) -> None:
    """The limits on the dataset as a whole (a folder, an S3 tree, what Kaggle unpacked)."""
    limits = Limits.from_config(cfg)
    files = len(layout.candidates) + len(layout.rejected)
    if files > cfg.max_files:
        raise limits.exceeded("the dataset has more files", files, "max_files")
    size = sum(c.path.stat().st_size for c in layout.candidates)
    if size > cfg.max_dataset_bytes:
        raise limits.exceeded(f"the images total {size} bytes", size, "max_dataset_bytes")


def _check_two_classes(
    kept: list[tuple[_Candidate, ImageCheck]], shown: str, layout: _Layout
) -> None:
    """A classifier needs two classes: one class is a layout mistake, said in one line."""
    labels = Counter(cand.label for cand, _ in kept)
    if len(labels) >= 2:
        return
    ((label, count),) = labels.items()
    hint = (
        f"the only class folder is {label}/: put each class's images in a folder of its own, "
        "or add a label CSV (columns such as file,label) beside it"
        if layout.kind == "folders"
        else "the label CSV names one label only"
    )
    raise DatasetError(
        f"{shown} gives one class only ({label}, {count} images): a classifier needs at least "
        f"two; {hint}"
    )


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


@dataclass(frozen=True)
class _LabelCsv:
    path: Path
    id_column: str
    label_column: str


def _csv_header(path: Path) -> list[str]:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        return [name.strip() for name in next(csv.reader(fh), [])]


def _column(header: list[str], configured: str, common: tuple[str, ...]) -> str | None:
    """The configured column (any case), else the first common name the header has."""
    columns = {name.lower(): name for name in header}
    if configured:
        return columns.get(configured.strip().lower())
    return next((columns[name] for name in common if name in columns), None)


def _label_csvs(root: Path, cfg: DataConfig) -> tuple[list[_LabelCsv], list[tuple[Path, list]]]:
    """Top-level CSVs with an image column and a label column, and the others with their header."""
    found, others = [], []
    for path in sorted(root.glob("*.csv")):
        header = _csv_header(path)
        id_column = _column(header, cfg.csv_id_column, ID_COLUMNS)
        label_column = _column(header, cfg.csv_label_column, LABEL_COLUMNS)
        if id_column and label_column and id_column != label_column:
            found.append(_LabelCsv(path, id_column, label_column))
        else:
            others.append((path, header))
    return found, others


def _no_label_csv(root: Path, others: list[tuple[Path, list]], cfg: DataConfig) -> DatasetError:
    """One line: which CSVs were found with which columns, and what would make them fit."""
    wanted_id = repr(cfg.csv_id_column) if cfg.csv_id_column else "/".join(ID_COLUMNS)
    wanted_label = repr(cfg.csv_label_column) if cfg.csv_label_column else "/".join(LABEL_COLUMNS)
    found = "; ".join(f"{path.name} has columns {', '.join(header)}" for path, header in others)
    return DatasetError(
        f"no label CSV in {root}: {found or 'no CSV found'}; expected an image column "
        f"({wanted_id}) and a label column ({wanted_label}): set data.csv_id_column and "
        "data.csv_label_column to the CSV's columns"
    )


def _read_layout(root: Path, cfg: DataConfig) -> _Layout:
    csvs, others = _label_csvs(root, cfg)
    class_dirs = [p for p in _visible(root) if p.is_dir()]
    layout = cfg.layout
    if layout in ("auto", "csv") and len(csvs) > 1:
        names = ", ".join(c.path.name for c in csvs)
        raise DatasetError(
            f"ambiguous dataset layout in {root}: several label CSVs ({names}); "
            "keep one, or set data.layout=folders"
        )
    if layout == "auto":
        columns_set = bool(cfg.csv_id_column or cfg.csv_label_column)
        # A CSV that does not fit, beside at most one folder (of images): say why it does not.
        if not csvs and others and (columns_set or len(class_dirs) <= 1):
            raise _no_label_csv(root, others, cfg)
        layout = "csv" if csvs else "folders"
    if layout == "csv" and not csvs:
        raise _no_label_csv(root, others, cfg)
    if layout == "folders" and not class_dirs:
        raise DatasetError(
            f"no dataset layout found in {root}: expected one folder per class or a label CSV"
        )
    if layout == "csv":
        return _csv_layout(root, csvs[0], cfg)
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


def _image_bases(root: Path, csv_path: Path) -> list[Path]:
    """Where a CSV's images are: the folder named like it (train.csv -> train/), else an
    images/ folder or the only folder there is; then the CSV's own folder."""
    folders = [p for p in _visible(root) if p.is_dir()]
    named = root / csv_path.stem
    images = [p for p in folders if p.name.lower() in IMAGE_FOLDERS]
    if named.is_dir():
        first = named
    elif len(images) == 1:
        first = images[0]
    elif len(folders) == 1:
        first = folders[0]
    else:
        return [root]
    return [first, root]


def _csv_layout(root: Path, label_csv: _LabelCsv, cfg: DataConfig) -> _Layout:
    """Rows of the CSV, resolved against the image folder (see `_image_bases`)."""
    layout = _Layout(kind="csv")
    csv_path = label_csv.path
    bases = _image_bases(root, csv_path)
    named: set[Path] = set()
    with csv_path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        for line, row in enumerate(reader, start=2):
            name = (row.get(label_csv.id_column) or "").strip().replace("\\", "/")
            label = (row.get(label_csv.label_column) or "").strip()
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


# Extensions tried, in this order, for an id written without one (as `Img-1` for Img-1.jpg).
_TRIED_EXTENSIONS = [e for ext in sorted(IMAGE_EXTENSIONS) for e in (ext, ext.upper())]


def _resolve(name: str, bases: list[Path]) -> tuple[Path, Path] | None:
    """The file a CSV row names (trying image extensions when it has none), inside a base."""
    pure = PurePosixPath(name)
    if pure.is_absolute() or ".." in pure.parts:
        return None
    tries = [str(pure)]
    if pure.suffix.lower() not in IMAGE_EXTENSIONS:
        tries += [f"{pure}{ext}" for ext in _TRIED_EXTENSIONS]
    for base in bases:
        for candidate in tries:
            if (base / candidate).is_file():
                return base / candidate, base
    return None


# -- checking and choosing ---------------------------------------------------------------------


def _inspect_all(candidates: list[_Candidate], cfg: DataConfig) -> list[ImageCheck]:
    """Hash + fully decode every file; threads overlap I/O, hashing and Pillow's decoders."""
    if not candidates:
        return []
    from joblib.externals.loky import cpu_count

    workers = min(32, cpu_count() * 2)

    def inspect(cand: _Candidate) -> ImageCheck:
        return inspect_image(cand.path, cfg.max_image_pixels, cfg.max_file_bytes)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(inspect, candidates)
        return list(tqdm(results, total=len(candidates), desc="ingest: check", unit="img"))


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


def _check_not_nested(root: Path, out: Path, shown: str) -> None:
    if out == root or out.is_relative_to(root) or root.is_relative_to(out):
        raise DatasetError(f"the output folder {out} and the source {shown} must not overlap")


def _write_images(
    kept: list[tuple[_Candidate, ImageCheck]], out: Path, move: bool
) -> list[dict[str, Any]]:
    """images/<label>/<name>, original bytes (moved out of a download, copied from a folder)."""
    rows = []
    taken: set[str] = set()
    for cand, check in tqdm(kept, desc="ingest: write", unit="img"):
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


def _empty_message(shown: str, quarantine: Quarantine) -> str:
    if not quarantine.total_in:
        return f"empty dataset: no image files found in {shown}"
    reasons = ", ".join(f"{n} {reason}" for reason, n in quarantine.reasons.items())
    example = quarantine.items[0]
    return (
        f"empty dataset: no valid image in {shown} ({quarantine.total_in} quarantined: {reasons}; "
        f"e.g. {example['item']}: {example['detail'] or example['reason']})"
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
    info = read_json(tmp / SOURCE)
    if info.get("version") != version:
        raise DatasetError(f"cache entry {location} is inconsistent: re-run with --refresh")
    write_json(tmp / SOURCE, {**info, "source": redact(source), "name": name})
    return location


def _store_in_cache(source: str, tmp: Path, cfg: DataConfig, name: str, remote: bool) -> str:
    """Upload the kept dataset under its version (once); remember which version a source gave."""
    version = read_json(tmp / SOURCE)["version"]
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
