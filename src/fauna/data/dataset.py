"""What a dataset artifact directory holds, and the small files every step shares.

Each step reads and writes a directory (a KFP `Dataset` artifact on a cluster):

    ingest      images/<label>/<file>, manifest.csv (path,label,sha256,width,height,format)
    preprocess  shards/part-*.tfrecord, manifest.csv (id,label,label_index,sha256,shard)
    split       {train,val,test}/part-*.tfrecord, manifest.csv (... ,split), split.json
    augment     the split layout plus augment.json (how train is augmented)

and all of them carry classes.json (the label order), and where input can be
rejected, quarantine.json + report.txt (what was rejected and why; counts reconcile).
Each folder is written through `fauna.step_output.step_output` and carries its completion
marker; the next step checks it with `fauna.step_output.require_output` (step names below).
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from fauna.contracts import AUGMENT_INFO as AUGMENT_INFO
from fauna.contracts import AUGMENT_STEP as AUGMENT_STEP
from fauna.contracts import CLASSES as CLASSES
from fauna.contracts import INGEST_STEP as INGEST_STEP
from fauna.contracts import PREPROCESS_INFO as PREPROCESS_INFO
from fauna.contracts import PREPROCESS_STEP as PREPROCESS_STEP
from fauna.contracts import SOURCE as SOURCE
from fauna.contracts import SPLIT_INFO as SPLIT_INFO
from fauna.contracts import SPLIT_STEP as SPLIT_STEP
from fauna.contracts import Classes
from fauna.errors import FaunaError

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
QUARANTINE = "quarantine.json"
REPORT = "report.txt"
SPLITS = ("train", "val", "test")
SHARDS_DIR = "shards"  # preprocess: shards/part-*.tfrecord


class DatasetError(FaunaError):
    """The input cannot make a usable dataset (one clear line, no traceback)."""


def display_name(label: str) -> str:
    """How a class name is shown: the Kaggle CSV writes spaces as `+` (`german+shepherd`)."""
    return label.replace("+", " ")


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"missing {path.name} in {path.parent}: is this the right step output?")
    return json.loads(path.read_text())


def write_manifest(path: Path, rows: Iterable[dict[str, Any]], fields: list[str]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row[k] for k in fields})
            count += 1
    return count


def read_manifest(path: Path) -> Iterator[dict[str, str]]:
    if not path.is_file():
        raise DatasetError(f"missing {path.name} in {path.parent}: is this the right step output?")
    with path.open(newline="") as fh:
        yield from csv.DictReader(fh)


def read_classes(directory: Path) -> list[str]:
    """classes.json of a step output, checked (fauna.contracts.Classes)."""
    return list(Classes.read(directory).names)


def carry_forward(names: Iterable[str], sources: Iterable[Path], out: Path) -> list[str]:
    """Copy each small file (classes.json, source.json, ...) from the first source that has it.

    Returns the names no source had, for the caller to report.
    """
    sources = [Path(s) for s in sources]
    missing = []
    for name in names:
        found = next((s / name for s in sources if (s / name).is_file()), None)
        if found is None:
            missing.append(name)
        else:
            shutil.copyfile(found, out / name)
    return missing


def carry_files(source: Path, out: Path, names: Iterable[str]) -> None:
    """`carry_forward` from one step output, with a warning for each file it lacks."""
    for name in carry_forward(names, [source], out):
        log.warning("%s has no %s; not carried forward", source, name)


def check_distinct(source: Path, out: Path) -> None:
    """A step never writes into (or over) the folder it reads."""
    source, out = Path(source).absolute(), Path(out).absolute()
    if source == out or out.is_relative_to(source) or source.is_relative_to(out):
        raise DatasetError(f"output folder must differ from the input (and not contain it): {out}")


class Quarantine:
    """Everything a step rejected, with a reason, so nothing is lost silently.

    The rejected items go to an anonymous temporary file as they come, not into memory:
    a source of 100,000 unreadable files costs a line each on disk and a counter here.
    """

    def __init__(self, step: str, total_in: int = 0, kept: int = 0) -> None:
        self.step, self.total_in, self.kept = step, total_in, kept
        self.count = 0
        self.first: dict[str, str] | None = None
        self._reasons: Counter[str] = Counter()
        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # closed with self

    def reject(self, item: str, reason: str, detail: str = "") -> None:
        entry = {"item": item, "reason": reason, "detail": detail}
        self._spool.write(json.dumps(entry) + "\n")
        self.first = self.first or entry
        self._reasons[reason] += 1
        self.count += 1

    def items(self) -> Iterator[dict[str, str]]:
        """The rejected items in the order they came, read back from the spool."""
        self._spool.flush()
        self._spool.seek(0)
        try:
            for line in self._spool:
                yield json.loads(line)
        finally:
            self._spool.seek(0, 2)  # later rejects append

    @property
    def reasons(self) -> dict[str, int]:
        return dict(self._reasons.most_common())

    @property
    def reconciles(self) -> bool:
        return self.total_in == self.kept + self.count

    def summary(self) -> str:
        lines = [
            f"{self.step}: {self.total_in} in = {self.kept} kept + {self.count} quarantined"
            + ("" if self.reconciles else "  ** COUNTS DO NOT RECONCILE **"),
        ]
        for reason, n in self.reasons.items():
            lines.append(f"  {n:6d}  {reason}")
        return "\n".join(lines)

    def write(self, directory: Path) -> None:
        """quarantine.json, streamed item by item: the bytes `write_json` gives the whole."""
        head = {
            "step": self.step,
            "total_in": self.total_in,
            "kept": self.kept,
            "quarantined": self.count,
            "reconciles": self.reconciles,
            "reasons": self.reasons,
        }
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / QUARANTINE).open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(head, indent=2)[:-2] + ",\n")
            if not self.count:
                fh.write('  "items": []\n}\n')
            else:
                fh.write('  "items": [')
                for n, entry in enumerate(self.items()):
                    text = json.dumps(entry, indent=2).replace("\n", "\n    ")
                    fh.write(("," if n else "") + "\n    " + text)
                fh.write("\n  ]\n}\n")
        (directory / REPORT).write_text(self.summary() + "\n")
