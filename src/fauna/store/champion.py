"""The champion of each dataset: one pointer object, moved only by compare-and-swap.

A champion belongs to one dataset, known by its class list and the content of its
images (`DatasetId.key`, e.g. `data-3f2a9c1b04d7e6a5`; the source's name is shown beside
it), so runs on different data that share a bucket never compare or replace each other's
models, and the same data under another folder name keeps its champion:

    models/<dataset>/champion.json             the pointer (run, backbone, metric, value,
                                               model URI, test-split signature, dataset,
                                               the champion it replaced, its history entry)
    models/<dataset>/history/<time>-<run>-<id>.json
                                               one entry per publish decision that left the
                                               pointer as it was, written once
                                               (If-None-Match), never overwritten
    models/<dataset>/history/<promoted_at>-<run>-moved.json
                                               the entry of one pointer move, named by the
                                               move itself (the new pointer's time and run):
                                               a retried publish finds it or writes it, so
                                               every move is recorded exactly once

The pointer changes by compare-and-swap (`move_pointer`): read it with its ETag, decide,
write with `If-Match: <etag>` (or `If-None-Match: *` for a dataset's first champion);
when another publish moved it meanwhile the write is refused, and the pointer is read
and the decision made again. Before the first write of a process to a bucket the store is
probed (`fauna.store.conditional_writes`): a store that ignores the conditions is refused.


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

from fauna.contracts import CLASSES, Classes, SourceInfo
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
        source = SourceInfo.read_first(folder) or SourceInfo()
        return cls.of(source.rest, list(Classes.read(folder).names))


def fingerprint_sorted(images: Iterable[tuple[str, str]]) -> str:
    """What a dataset is: a hash over its images' (label, sha256), paths left out, given
    sorted (streamed: ingest sorts them on disk)."""
    digest = hashlib.sha256()
    for label, sha in images:
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
    from fauna.store import storage

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
    On a lost race the pointer is read and decided again; a write whose reply was lost but
    which landed counts as done. Returns (decision, rounds).
    """
    from fauna.store import conditional_writes as store_check
    from fauna.store import storage

    uri = pointer_uri(bucket, dataset_key)
    for attempt in range(1, attempts + 1):
        current = read_pointer(bucket, dataset_key)
        decision, new = decide(current[0] if current else None)
        if new is None:
            return decision, attempt
        store_check.require_conditional_writes(bucket)
        before_write(decision)
        # Where the history entry of this move lives: whoever records it later finds it.
        new = {**new, "history_entry": move_entry_uri(bucket, dataset_key, new)}
        text = json.dumps(new, indent=2)
        try:
            if current is None:
                storage.write_text(uri, text, content_type=JSON, if_none_match=True)
            else:
                storage.write_text(uri, text, content_type=JSON, if_match=current[1])
        except storage.PreconditionFailed:
            log.info("the champion of %s changed while deciding: reading it again", dataset_key)
            continue
        except storage.StorageError as exc:
            if not _landed(uri, text, exc):
                raise
        return decision, attempt
    raise ChampionError(
        f"the champion pointer {uri} changed {attempts} times while deciding: gave up"
    )


def _landed(uri: str, text: str, failure: Exception) -> bool:
    """After a failed pointer write: did it land anyway (its reply was lost)? Reads it back.

    When the pointer cannot be read either, `failure.pointer_may_have_moved` is set: the
    caller must not claim either way.
    """
    from fauna.store import storage

    try:
        found = storage.read_text_with_etag(uri)
    except storage.StorageError:
        failure.pointer_may_have_moved = True  # type: ignore[attr-defined]
        return False
    if found is not None and found[0] == text:
        log.warning("writing %s failed, but it holds what was written: the write landed", uri)
        return True
    return False


def now_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


def append_history(bucket: str, dataset_key: str, run_id: str, entry: dict[str, Any]) -> str:
    """Write one history entry under a new, unique name (never overwrites); returns its URI."""
    from fauna.store import storage

    name = f"{now_stamp()}-{slug(run_id)}-{uuid.uuid4().hex[:8]}.json"
    uri = f"{history_uri(bucket, dataset_key)}/{name}"
    storage.write_text(uri, json.dumps(entry, indent=2), content_type=JSON, if_none_match=True)
    return uri


def move_entry_uri(bucket: str, dataset_key: str, pointer: dict[str, Any]) -> str:
    """Where the history entry of the move to `pointer` lives: named by the move itself."""
    # The stamp keeps its case (now_stamp's T and Z) so names sort in time with the rest.
    stamp = re.sub(r"[^A-Za-z0-9._-]+", "-", str(pointer.get("promoted_at") or "unknown"))
    return f"{history_uri(bucket, dataset_key)}/{stamp}-{slug(pointer['run_id'])}-moved.json"


def record_move(
    bucket: str, dataset_key: str, pointer: dict[str, Any], entry: dict[str, Any]
) -> str:
    """Write the entry of one pointer move unless it is there already; returns its URI.

    The name comes from the pointer (its time and run), so the publish that moved it and a
    retried publish that finds its run already champion write the same key, once.
    """
    from fauna.store import storage

    uri = move_entry_uri(bucket, dataset_key, pointer)
    try:
        storage.write_text(uri, json.dumps(entry, indent=2), content_type=JSON, if_none_match=True)
    except storage.PreconditionFailed:
        log.info("%s already records this move", uri)
    return uri


def record_decision(
    bucket: str,
    dataset_key: str,
    run_id: str,
    decision: dict[str, Any],
    rounds: int,
    candidate: dict[str, Any] | None,
    new: dict[str, Any] | None,
    current: dict[str, Any] | None,
) -> str:
    """The history entry of one publish decision; returns its URI.

    `new` is the pointer this decision wrote (None: it left the pointer), `current` the
    one it decided on. A move is recorded under a name derived from the new pointer, so a
    retried publish that finds its run already champion (the reply to its pointer write
    was lost, or it was killed before recording) writes the same entry if it is missing,
    or finds it; the next move also records the move it replaces if nobody did.
    """
    if new is not None:
        if current is not None and current.get("history_entry"):
            record_later(bucket, dataset_key, current)
        return record_move(bucket, dataset_key, new, move_entry(new, decision, rounds))
    if decision.get("already_champion") and current is not None:
        return record_later(bucket, dataset_key, current)
    entry = {
        "run_id": run_id,
        "decided_at": now_stamp(),
        **decision,
        "moved_pointer": False,
        "rounds": rounds,
        "candidate": candidate,
        "replaced": None,
    }
    return append_history(bucket, dataset_key, run_id, entry)


def summary(pointer: dict[str, Any]) -> dict[str, Any]:
    """What a history entry or the next pointer keeps of a champion."""
    keys = ("run_id", "backbone", "metric", "value", "model_uri", "promoted_at")
    return {k: pointer.get(k) for k in keys}


def move_entry(
    pointer: dict[str, Any], decision: dict[str, Any], rounds: int | None
) -> dict[str, Any]:
    """The history entry of the move to `pointer`, with the decision that made it."""
    return {
        "run_id": pointer["run_id"],
        "decided_at": pointer.get("promoted_at"),
        **decision,
        "moved_pointer": True,
        "rounds": rounds,
        "candidate": summary(pointer),
        "replaced": pointer.get("previous"),
    }


def record_later(bucket: str, dataset_key: str, pointer: dict[str, Any]) -> str:
    """The move to `pointer`, recorded from the pointer alone if its entry is missing.

    Its own publish may have died after the move (a lost reply, a kill): a retry of that
    publish, or the next publish that moves the pointer, writes the entry, once.
    """
    known = {
        "promoted": True,
        "reason": pointer.get("reason"),
        "metric": pointer.get("metric"),
        "candidate_value": pointer.get("value"),
        "champion_value": None,
        "already_champion": False,
        "recorded_later": True,
    }
    return record_move(bucket, dataset_key, pointer, move_entry(pointer, known, None))


def read_history(bucket: str, dataset_key: str) -> list[dict[str, Any]]:
    """Every history entry of a dataset, oldest first."""
    from fauna.store import storage

    prefix = history_uri(bucket, dataset_key)
    keys = sorted(key for key, _size in storage.list_keys(prefix))
    return [json.loads(storage.read_text(f"s3://{bucket}/{key}")) for key in keys]


# -------------------------------------------------------------------- finding one


def datasets_with_champion(bucket: str) -> list[str]:
    """The dataset keys that have a champion pointer in the bucket (sorted)."""
    from fauna.store import storage

    found = []
    for key, _size in storage.list_keys(f"s3://{bucket}/{CHAMPIONS_PREFIX}"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == POINTER:
            if parts[1] == LEGACY_DATASET:
                log.warning(
                    "ignoring s3://%s/%s: a champion from before champions were kept per "
                    "dataset (publish a run to make one for its dataset)",
                    bucket,
                    key,
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
