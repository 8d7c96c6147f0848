"""The champion of each dataset: one pointer object, moved only by compare-and-swap.

A champion belongs to one dataset, known by its class list and the content of its
images (`DatasetId.key`, e.g. `data-3f2a9c1b04d7e6a5`; the source's name is shown beside
it), so runs on different data that share a bucket never compare or replace each other's
models, and the same data under another folder name keeps its champion:

    models/<dataset>/champion.json             the pointer (run, backbone, metric, value,
                                               model URI, test-split signature, dataset,
                                               the champion it replaced)
    models/<dataset>/history/<time>-<run>-<id>.json
                                               one entry per publish decision, written once
                                               (If-None-Match), never overwritten

The pointer changes by compare-and-swap (`move_pointer`): read it with its ETag, decide,
write with `If-Match: <etag>` (or `If-None-Match: *` for a dataset's first champion);
when another publish moved it meanwhile the write is refused, and the pointer is read
and the decision made again.


Importing this module is light (boto3 is imported by the functions that talk to S3), so
`DatasetId` serves compare and `--help` without loading it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from fauna.dataset import CLASSES, SOURCE
from fauna.errors import FaunaError

log = logging.getLogger(__name__)

CHAMPIONS_PREFIX = "models"
POINTER = "champion.json"
HISTORY = "history"
# Where a single global pointer lived before champions were kept per dataset.
LEGACY_DATASET = "champion"
# Keys of datasets known by content (`DatasetId.key`); older keys start with the name.
CONTENT_KEY_PREFIX = "data-"
# Compare-and-swap rounds before giving up (each one re-reads and re-decides).
MAX_ATTEMPTS = 8
JSON = "application/json"

T = TypeVar("T")


class ChampionError(FaunaError):
    """The champion cannot be found, read or moved (one line naming the bucket and dataset)."""


def slug(text: str) -> str:
    """A name safe in an S3 key and a command line: lower case, [a-z0-9._-], at most 40."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", str(text).strip().lower()).strip("-._")
    return cleaned[:40].strip("-._") or "dataset"


@dataclass(frozen=True)
class DatasetId:
    """A dataset as champions know it: by what it is, shown by the name of its source.

    `key` comes from the class list (in label order) and `content`, ingest's fingerprint
    of every kept image's (label, sha256): renaming or moving the folder, or uploading the
    same archive again, keeps the key and so the champion history; other images under the
    same name get another key. `name` is for display only. Data ingested before the
    fingerprint existed (no `content` in source.json) keeps its old key,
    `<name>-<classes hash>` (`legacy_key`), so its pointers keep working.
    """

    name: str
    classes: tuple[str, ...]
    content: str = ""

    @property
    def classes_hash(self) -> str:
        return hashlib.sha256(json.dumps(list(self.classes)).encode()).hexdigest()[:8]

    @property
    def legacy_key(self) -> str:
        return f"{slug(self.name)}-{self.classes_hash}"

    @property
    def key(self) -> str:
        if not self.content:
            return self.legacy_key
        what = json.dumps({"classes": list(self.classes), "content": self.content})
        return f"{CONTENT_KEY_PREFIX}{hashlib.sha256(what.encode()).hexdigest()[:16]}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "classes_hash": self.classes_hash,
            "num_classes": len(self.classes),
            "content": self.content,
        }

    @classmethod
    def of(cls, source: dict[str, Any], classes: list[str]) -> DatasetId:
        name = str(source.get("name") or "unnamed")
        return cls(name, tuple(classes), str(source.get("content") or ""))

    @classmethod
    def from_folder(cls, folder: Path) -> DatasetId:
        """From a step output's classes.json and source.json."""
        folder = Path(folder)
        if not (folder / CLASSES).is_file():
            raise ChampionError(f"no {CLASSES} in {folder}: cannot tell which dataset it is")
        source = json.loads((folder / SOURCE).read_text()) if (folder / SOURCE).is_file() else {}
        return cls.of(source, json.loads((folder / CLASSES).read_text()))


def content_fingerprint(images: Iterable[tuple[str, str]]) -> str:
    """What a dataset is: a hash over its images' sorted (label, sha256), paths left out."""
    digest = hashlib.sha256()
    for label, sha in sorted(images):
        digest.update(f"{label}\t{sha}\n".encode())
    return digest.hexdigest()[:32]


def pointer_uri(bucket: str, dataset_key: str) -> str:
    return f"s3://{bucket}/{CHAMPIONS_PREFIX}/{dataset_key}/{POINTER}"


def history_uri(bucket: str, dataset_key: str) -> str:
    return f"s3://{bucket}/{CHAMPIONS_PREFIX}/{dataset_key}/{HISTORY}"


def _parse(text: str, uri: str) -> dict[str, Any]:
    try:
        pointer = json.loads(text)
    except ValueError:
        pointer = None
    if not isinstance(pointer, dict):
        raise ChampionError(f"the champion pointer {uri} is not a JSON object: fix or remove it")
    return pointer


def read_pointer(bucket: str, dataset_key: str) -> tuple[dict[str, Any], str] | None:
    """(pointer, etag), or None when this dataset has no champion yet.

    An unreadable pointer (outage, missing bucket) raises: it is never taken for "none".
    """
    from fauna import storage

    uri = pointer_uri(bucket, dataset_key)
    found = storage.read_text_with_etag(uri)
    return None if found is None else (_parse(found[0], uri), found[1])


def move_pointer(
    bucket: str,
    dataset_key: str,
    decide: Callable[[dict[str, Any] | None], tuple[T, dict[str, Any] | None]],
    before_write: Callable[[T], None],
    attempts: int = MAX_ATTEMPTS,
) -> tuple[T, int]:
    """Compare-and-swap: decide on the pointer read; write the new one only if it is unchanged.

    `decide(current)` returns (decision, new pointer or None to leave it); `before_write`
    runs before each write (publish uploads everything the new pointer will name there).
    On a lost race the pointer is read and decided again. Returns (decision, rounds).
    """
    from fauna import storage

    uri = pointer_uri(bucket, dataset_key)
    for attempt in range(1, attempts + 1):
        current = read_pointer(bucket, dataset_key)
        decision, new = decide(current[0] if current else None)
        if new is None:
            return decision, attempt
        before_write(decision)
        text = json.dumps(new, indent=2)
        try:
            if current is None:
                storage.write_text(uri, text, content_type=JSON, if_none_match=True)
            else:
                storage.write_text(uri, text, content_type=JSON, if_match=current[1])
        except storage.PreconditionFailed:
            log.info(f"the champion of {dataset_key} changed while deciding: reading it again")
            continue
        return decision, attempt
    raise ChampionError(
        f"the champion pointer {uri} changed {attempts} times while deciding: gave up"
    )


def now_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def append_history(bucket: str, dataset_key: str, run_id: str, entry: dict[str, Any]) -> str:
    """Write one history entry under a new, unique name (never overwrites); returns its URI."""
    from fauna import storage

    name = f"{now_stamp()}-{slug(run_id)}-{uuid.uuid4().hex[:8]}.json"
    uri = f"{history_uri(bucket, dataset_key)}/{name}"
    storage.write_text(uri, json.dumps(entry, indent=2), content_type=JSON, if_none_match=True)
    return uri


def read_history(bucket: str, dataset_key: str) -> list[dict[str, Any]]:
    """Every history entry of a dataset, oldest first."""
    from fauna import storage

    prefix = history_uri(bucket, dataset_key)
    keys = sorted(key for key, _size in storage.list_keys(prefix))
    return [json.loads(storage.read_text(f"s3://{bucket}/{key}")) for key in keys]


# -------------------------------------------------------------------- finding one


def datasets_with_champion(bucket: str) -> list[str]:
    """The dataset keys that have a champion pointer in the bucket (sorted)."""
    from fauna import storage

    found = []
    for key, _size in storage.list_keys(f"s3://{bucket}/{CHAMPIONS_PREFIX}"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == POINTER:
            if parts[1] == LEGACY_DATASET:
                log.warning(
                    f"ignoring s3://{bucket}/{key}: a champion from before champions were "
                    "kept per dataset (publish a run to make one for its dataset)"
                )
                continue
            found.append(parts[1])
    return sorted(found)


def _name_part(key: str) -> str:
    return key.rsplit("-", 1)[0]


def _names(bucket: str, keys: list[str]) -> dict[str, str]:
    """Each dataset key's name (slugged): in an old key itself, else in its pointer."""
    names = {}
    for key in keys:
        if key.startswith(CONTENT_KEY_PREFIX):
            found = read_pointer(bucket, key)
            names[key] = slug((found[0].get("dataset") or {}).get("name", "")) if found else ""
        else:
            names[key] = _name_part(key)
    return names


def find_champion(bucket: str, wanted: str = "", configured_name: str = "") -> dict[str, Any]:
    """The pointer of the champion `wanted` names (a dataset key or name).

    With nothing wanted: the only dataset with a champion, else the one named like
    `configured_name`. Anything else is a one-line error listing the datasets.
    """
    keys = datasets_with_champion(bucket)
    where = f"s3://{bucket}/{CHAMPIONS_PREFIX}/"
    if not keys:
        raise ChampionError(
            f"no champion yet in {where} (no dataset has one): run the pipeline first, "
            "or pass a model folder or s3:// URI"
        )
    listing = f"(datasets with a champion: {', '.join(keys)})"
    if wanted:
        names = _names(bucket, keys) if wanted not in keys else {}
        matches = [k for k in keys if wanted == k or slug(wanted) in (k, names.get(k))]
        if len(matches) != 1:
            problem = "matches several datasets" if matches else "has no champion"
            raise ChampionError(f"dataset {wanted!r} {problem} in {where} {listing}")
    elif len(keys) == 1:
        matches = keys
    else:
        names = _names(bucket, keys) if configured_name else {}
        matches = [k for k in keys if configured_name and names[k] == slug(configured_name)]
        if len(matches) != 1:
            raise ChampionError(
                f"several datasets have a champion in {where} {listing}: "
                "use --model champion:<dataset>"
            )
    found = read_pointer(bucket, matches[0])
    if found is None:  # removed between the listing and the read
        raise ChampionError(f"the champion of {matches[0]} disappeared from {where}")
    return found[0]
