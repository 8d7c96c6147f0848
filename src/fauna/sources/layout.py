"""How a fetched folder labels its images: one folder per class, or a label CSV.

`read_layout` turns the folder into candidates (file, label, name inside its class), added
to an on-disk `FileTable` so that nothing per file stays in memory, and the items refused
before any file is opened (with a reason), for ingest to check.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from fauna.config import DataConfig
from fauna.data.dataset import DatasetError, Quarantine
from fauna.data.filetable import FileTable
from fauna.data.imagecheck import IMAGE_EXTENSIONS, looks_like_image
from fauna.data.synthetic import SYNTHETIC_MARKER

# Label CSV columns, matched case-insensitively, first match wins (data.csv_*_column override).
ID_COLUMNS = ("file", "filename", "path", "image", "image_id", "id")
LABEL_COLUMNS = ("label", "class", "species", "animal", "category")
# Folder names that hold a CSV's images when no folder is named like the CSV.
IMAGE_FOLDERS = {"images", "imgs", "img", "pictures", "photos"}
# Top folders that are splits of a dataset, not classes: their class folders are pooled.
SPLIT_FOLDERS = {"train", "training", "val", "valid", "validation", "test", "testing"}

# Quarantine reasons decided from the layout (image-level ones live in fauna.data.imagecheck).
MISSING_FILE = "missing file"
EMPTY_LABEL = "empty label"
UNKNOWN_LABEL = "unknown label"
INVALID_LABEL = "invalid label"
NOT_IN_CSV = "not in CSV"
NO_CLASS_FOLDER = "no class folder"
UNSUPPORTED_FILE = "unsupported file type"


@dataclass
class Layout:
    # One row per file to check: its item (its name in reports), path, rel (its name inside
    # its class) and label.
    candidates: FileTable
    kind: str = "folders"  # folders | csv
    # What was refused before any file is opened (spooled to disk, not held per file).
    rejected: Quarantine = field(default_factory=lambda: Quarantine("layout"))
    # Label CSVs found beside class folders that were not used (for a hint).
    unused_csvs: list[str] = field(default_factory=list)


def _hidden(name: str) -> bool:
    return name.startswith(".") or name == "__MACOSX"


def visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not _hidden(p.name))


def find_data_root(root: Path) -> tuple[bool, Path]:
    """Step down through wrapper folders (an archive's top folder); note any SYNTHETIC marker."""
    synthetic = False
    while True:
        synthetic = synthetic or (root / SYNTHETIC_MARKER).is_file()
        entries = [p for p in visible(root) if p.name != SYNTHETIC_MARKER]
        if len(entries) == 1 and entries[0].is_dir():
            inner = visible(entries[0])
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


def read_layout(
    root: Path, cfg: DataConfig, table: FileTable, labels_csv: Path | None = None
) -> Layout:
    """The layout of `root`: the label CSV named (by the source or `data.labels_csv`), else
    as `data.layout` says, else detected (a label CSV, or one folder per class). The
    candidates go into `table`."""
    named = _named_csv(root, cfg, labels_csv)
    if named is not None:
        return _csv_layout(named.parent, _fitting_csv(named, cfg), cfg, table)
    csvs, others = _label_csvs(root, cfg)
    class_dirs = [p for p in visible(root) if p.is_dir()]
    layout = cfg.layout
    if layout in ("auto", "csv") and len(csvs) > 1:
        raise _ambiguous(root, csvs, class_dirs)
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
        return _csv_layout(root, csvs[0], cfg, table)
    found = _folders_layout(root, class_dirs, cfg, table)
    found.unused_csvs = [c.path.name for c in csvs]
    return found


def _ambiguous(root: Path, csvs: list[_LabelCsv], class_dirs: list[Path]) -> DatasetError:
    """Several label CSVs: name the setting that picks one (folders only where they fit)."""
    names = ", ".join(c.path.name for c in csvs)
    folders = ", or set data.layout=folders" if len(class_dirs) >= 2 else ""
    return DatasetError(
        f"ambiguous dataset layout in {root}: several label CSVs ({names}); name the one to "
        f"use with data.labels_csv (e.g. --set data.labels_csv={csvs[0].path.name}, or pass "
        f"the CSV itself as --source){folders}"
    )


def _named_csv(root: Path, cfg: DataConfig, given: Path | None) -> Path | None:
    """The label CSV the user named: the source itself, or `data.labels_csv` (a path, or a
    name inside the source)."""
    if given is not None:
        if cfg.layout == "folders":
            raise DatasetError(f"the source is a label CSV ({given.name}) but data.layout=folders")
        return given
    if not cfg.labels_csv:
        return None
    named = Path(cfg.labels_csv).expanduser()
    if named.is_absolute():
        matches = [named] if named.is_file() else []
    elif (root / named).is_file():
        matches = [root / named]
    else:
        matches = sorted(root.rglob(named.name))
    if len(matches) != 1:
        there = ", ".join(p.relative_to(root).as_posix() for p in sorted(root.rglob("*.csv")))
        why = "several match" if matches else "no such file"
        raise DatasetError(
            f"data.labels_csv={cfg.labels_csv}: {why} in {root} (CSVs there: {there or 'none'})"
        )
    return matches[0].resolve()


def _fitting_csv(path: Path, cfg: DataConfig) -> _LabelCsv:
    """The named CSV with its image and label columns, or one line saying what it lacks."""
    header = _csv_header(path)
    id_column = _column(header, cfg.csv_id_column, ID_COLUMNS)
    label_column = _column(header, cfg.csv_label_column, LABEL_COLUMNS)
    if not (id_column and label_column and id_column != label_column):
        raise _no_label_csv(path.parent, [(path, header)], cfg)
    return _LabelCsv(path, id_column, label_column)


def _label_problem(label: str, cfg: DataConfig) -> tuple[str, str]:
    """(reason, detail) when a label cannot be used, else ("", "")."""
    if not label:
        return EMPTY_LABEL, ""
    if label in (".", "..") or re.search(r"[/\\\x00]", label):
        return INVALID_LABEL, f"{label!r} cannot name a folder"
    if cfg.classes and label not in cfg.classes:
        return UNKNOWN_LABEL, f"{label!r} is not in data.classes"
    return "", ""


def _files_under(folder: Path) -> Iterator[Path]:
    """The visible files under `folder` in `sorted()` order of their paths, streamed.

    That order is a depth-first walk with each folder's names sorted, so only one listing
    per level is held (not one `Path` per file). As `rglob` did: symlinked folders are not
    entered, symlinks to files count, an unreadable folder is skipped.
    """
    names, folders = [], set()
    try:
        with os.scandir(folder) as listing:
            for entry in listing:
                names.append(entry.name)
                if entry.is_dir() and not entry.is_symlink():
                    folders.add(entry.name)
    except PermissionError:
        return
    names.sort()
    for name in names:
        if _hidden(name):
            continue
        path = folder / name
        if name in folders:
            yield from _files_under(path)
        elif path.is_file():
            yield path


def _folders_layout(
    root: Path, class_dirs: list[Path], cfg: DataConfig, table: FileTable
) -> Layout:
    """One folder per class; train/ val/ test/ folders that each hold classes are merged."""
    groups = [(root, class_dirs, "")]
    if all(d.name.lower() in SPLIT_FOLDERS for d in class_dirs):
        groups = [(d, [c for c in visible(d) if c.is_dir()], d.name) for d in class_dirs]
    layout = Layout(table)
    for folder, classes, split in groups:
        for path in visible(folder):
            if path.is_file() and looks_like_image(path):
                item = path.relative_to(root).as_posix()
                layout.rejected.reject(item, NO_CLASS_FOLDER, "not inside a class folder")
        for class_dir in classes:
            label = class_dir.name.strip()
            reason, detail = _label_problem(label, cfg)
            for path in _files_under(class_dir):
                item = path.relative_to(root).as_posix()
                if reason:
                    layout.rejected.reject(item, reason, detail)
                elif not looks_like_image(path):
                    layout.rejected.reject(item, UNSUPPORTED_FILE, path.suffix or "no extension")
                else:
                    rel = path.relative_to(class_dir).as_posix()
                    rel = f"{split}/{rel}" if split else rel
                    table.add(item, str(path), rel, label)
    return layout


def _image_bases(root: Path, csv_path: Path) -> list[Path]:
    """Where a CSV's images are: the folder named like it (train.csv -> train/), else an
    images/ folder or the only folder there is; then the CSV's own folder."""
    folders = [p for p in visible(root) if p.is_dir()]
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


def _csv_layout(root: Path, label_csv: _LabelCsv, cfg: DataConfig, table: FileTable) -> Layout:
    """Rows of the CSV, resolved against the image folder (see `_image_bases`)."""
    layout = Layout(table, kind="csv")
    csv_path = label_csv.path
    bases = _image_bases(root, csv_path)
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
                layout.rejected.reject(item, MISSING_FILE, f"not found under {bases[0].name}/")
                continue
            path, base = found
            table.name(str(path))
            item = path.relative_to(root).as_posix()
            reason, detail = _label_problem(label, cfg)
            if reason:
                layout.rejected.reject(item, reason, f"{where}: {detail}".rstrip(": "))
                continue
            rel = path.relative_to(base).as_posix()
            table.add(item, str(path), rel, label)
    for path in _files_under(bases[0]):
        if looks_like_image(path) and not table.is_named(str(path)):
            item = path.relative_to(root).as_posix()
            layout.rejected.reject(item, NOT_IN_CSV, f"no row in {csv_path.name}")
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
