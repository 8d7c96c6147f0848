"""A label CSV given as the source (`--source path/to/labels.csv`): its images are resolved
beside it, as if its folder were the source and `data.labels_csv` named it."""

from __future__ import annotations

from pathlib import Path

from fauna.sources.base import Fetched, Limits, Source, slug


def _detect(source: str) -> bool:
    path = Path(source).expanduser()
    return path.suffix.lower() == ".csv" and path.is_file()


def _fetch(source: str, workdir: Path, limits: Limits) -> Fetched:
    path = Path(source).expanduser().absolute()
    return Fetched(path.parent, remote=False, labels_csv=path)


def _name(source: str) -> str:
    """The folder's name: the CSV names the labels, the folder the dataset."""
    return slug(Path(source).expanduser().absolute().parent.name)


SOURCE = Source("csv", _detect, _fetch, _name, "a label CSV", local=True)
