"""How a document between steps is read and written: one-line errors, a schema version.

Every object document is written with `"schema_version": N` first. A document without it
was written before versions existed: it is version 1 (the same shape). A reader refuses a
document newer than the version it knows, in one line, instead of misreading it. The two
list documents (classes.json, history.json) cannot hold a key: their shape is version 1,
and a later version would be an object carrying `schema_version`, which this reader refuses
by the same line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

from fauna.errors import FaunaError

VERSION_KEY = "schema_version"


class ContractError(FaunaError):
    """A document between steps is missing, unreadable or lacks a key (one line)."""


_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true/false"}
_TYPE_NAMES |= {dict: "an object", list: "a list", type(None): "null"}


def load_json(path: Path) -> Any:
    """The JSON in `path`, or one line saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"missing {path.name} in {path.parent}: is this the right step output?")
    return parse_json(path.read_text(), str(path))


def parse_json(text: str, where: str) -> Any:
    """The JSON value in `text` read from `where` (a path or an s3:// URI)."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ContractError(f"{where} is not valid JSON ({exc})") from None


def load_document(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or one line saying what is wrong with the file."""
    return check_object(load_json(path), str(path))


def parse_document(text: str, where: str) -> dict[str, Any]:
    """A JSON object from `text` read from `where` (a path or an s3:// URI)."""
    return check_object(parse_json(text, where), where)


def check_object(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ContractError(f"{where} must hold a JSON object, not {type(doc).__name__}")
    return doc


def dump(path: Path, doc: Any) -> Path:
    """Write `doc` as fauna.data.dataset.write_json does (indented, a final newline)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    return path


def check_key(doc: dict[str, Any], key: str, types: tuple[type, ...], where: str) -> Any:
    """doc[key] when present and of one of `types` (a bool is not a number)."""
    if key not in doc:
        raise ContractError(f"{where} has no {key!r}: written by another tool or damaged")
    return check_value(doc[key], repr(key), types, where)


def check_value(value: Any, what: str, types: tuple[type, ...], where: str) -> Any:
    """`value` (named `what` in the message) when of one of `types`."""
    numeric = any(t in (int, float) for t in types) and bool not in types
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in types))
        raise ContractError(f"{where}: {what} must be {wanted}, got {value!r:.80}")
    return value


def check_version(doc: Any, where: str, known: int) -> int:
    """The document's schema version (1 when it has none); one line when it is newer."""
    if not isinstance(doc, dict) or VERSION_KEY not in doc:
        return 1
    version = check_key(doc, VERSION_KEY, (int,), where)
    if version < 1:
        raise ContractError(f"{where}: {VERSION_KEY!r} must be 1 or more, got {version}")
    if version > known:
        raise ContractError(
            f"{where}: {VERSION_KEY} {version} is newer than this fauna reads ({known}): "
            "upgrade fauna"
        )
    return version


def check_list(doc: Any, where: str, known: int) -> list[Any]:
    """A list document: a newer version (an object) is refused, anything else named."""
    check_version(doc, where, known)
    if not isinstance(doc, list):
        raise ContractError(f"{where} must hold a JSON list, not {type(doc).__name__}")
    return doc


class Stored:
    """A document kept as FILE in a step output folder: how it is read and written.

    `from_json` (each document's own) checks the shape, so `read` hands it any JSON value.
    """

    FILE: ClassVar[str]
    SCHEMA_VERSION: ClassVar[int] = 1

    @classmethod
    def from_json(cls, doc: Any, where: str = "") -> Any:
        raise NotImplementedError

    def to_json(self) -> Any:
        raise NotImplementedError

    @classmethod
    def read(cls, folder: Path) -> Any:
        """The document in a step output folder."""
        path = Path(folder) / cls.FILE
        return cls.from_json(load_json(path), str(path))

    @classmethod
    def read_first(cls, *folders: Path) -> Any:
        """The document of the first folder that holds one (None: none does)."""
        found = next((Path(f) for f in folders if (Path(f) / cls.FILE).is_file()), None)
        return None if found is None else cls.read(found)

    def write(self, folder: Path) -> Path:
        """Write the document into a step output folder; its path."""
        return dump(Path(folder) / self.FILE, self.to_json())


class Document(Stored):
    """The shared read/write of an object document: the version, typed fields, then `rest`.

    TYPES are the keys every version-1 document has (fields, in the written order);
    CHECKED keys it has too, kept in `rest` where they were written (read through
    properties); OPTIONAL the keys some lack (older writers, hand-made test data): checked
    when there, kept in `rest`.
    """

    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {}
    CHECKED: ClassVar[dict[str, tuple[type, ...]]] = {}
    OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {}

    def to_json(self) -> dict[str, Any]:
        typed = {name: getattr(self, name) for name in self.TYPES}
        return {VERSION_KEY: self.SCHEMA_VERSION, **typed, **getattr(self, "rest", {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = "") -> Any:
        where = where or cls.FILE
        check_version(check_object(doc, where), where, cls.SCHEMA_VERSION)
        typed = {k: check_key(doc, k, t, where) for k, t in cls.TYPES.items()}
        for key, types in cls.CHECKED.items():
            check_key(doc, key, types, where)
        for key, types in cls.OPTIONAL.items():
            if key in doc:
                check_key(doc, key, types, where)
        rest = {k: v for k, v in doc.items() if k not in typed and k != VERSION_KEY}
        return cls(**typed, rest=rest)  # type: ignore[call-arg]
