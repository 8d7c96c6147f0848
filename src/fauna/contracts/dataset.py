"""The small documents a dataset carries from step to step (and on into the model folder):
classes.json, source.json, preprocess.json, split.json, augment.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fauna.contracts.base import ContractError, Document, Stored, check_list, check_value
from fauna.contracts.names import (
    AUGMENT_INFO,
    CLASSES,
    PREPROCESS_INFO,
    SOURCE,
    SPLIT_INFO,
)

_INT = (int,)
_NUMBER = (int, float)
_OPT_STR = (str, type(None))


@dataclass(frozen=True)
class Classes(Stored):
    """classes.json: the class names in label order (label index = position).

    Written by ingest, carried by every later step into the model folder. A JSON list, so
    its version is its shape (fauna.contracts.base).
    """

    FILE: ClassVar[str] = CLASSES
    SCHEMA_VERSION: ClassVar[int] = 1
    names: tuple[str, ...]

    def to_json(self) -> list[str]:
        return list(self.names)

    @classmethod
    def from_json(cls, doc: Any, where: str = CLASSES) -> Classes:
        names = check_list(doc, where, cls.SCHEMA_VERSION)
        for i, name in enumerate(names):
            check_value(name, f"entry {i}", (str,), where)
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ContractError(f"{where} lists {', '.join(map(repr, twice))} more than once")
        return cls(tuple(names))


@dataclass(frozen=True)
class SourceInfo(Document):
    """source.json: where ingest took the images from and what they are.

    Ingest writes source (redacted), name, synthetic, version, content (the fingerprint of
    the kept images) and max_image_pixels; older data and hand-made test data lack some, so
    each is checked when present and read through a property with the readers' default.
    """

    FILE: ClassVar[str] = SOURCE
    OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {
        "source": (str,),
        "name": _OPT_STR,
        "synthetic": (bool,),
        "version": (str,),
        "content": _OPT_STR,
        "max_image_pixels": (int, type(None)),
    }
    rest: dict[str, Any] = field(default_factory=dict)

    @property
    def synthetic(self) -> bool:
        """Synthetic unless the document says otherwise: the safe default."""
        return bool(self.rest.get("synthetic", True))

    @property
    def name(self) -> str | None:
        return self.rest.get("name")

    @property
    def version(self) -> str | None:
        return self.rest.get("version")

    @property
    def content(self) -> str | None:
        return self.rest.get("content")

    @property
    def max_image_pixels(self) -> int | None:
        return self.rest.get("max_image_pixels")


@dataclass(frozen=True)
class PreprocessInfo(Document):
    """preprocess.json: how the images were made square and re-encoded.

    `rest` holds mode, filter, jpeg_quality, images_per_shard and count (the images kept);
    data from tests and older tools may lack them, hence the defaults of the properties.
    """

    FILE: ClassVar[str] = PREPROCESS_INFO
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {"image_size": _INT}
    OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {
        "mode": (str,),
        "filter": (str,),
        "jpeg_quality": _INT,
        "images_per_shard": _INT,
        "count": _INT,
    }
    image_size: int
    rest: dict[str, Any] = field(default_factory=dict)

    def mode(self, default: str) -> str:
        return str(self.rest.get("mode") or default)

    @property
    def jpeg_quality(self) -> int | None:
        return self.rest.get("jpeg_quality")

    @property
    def images_per_shard(self) -> int | None:
        return self.rest.get("images_per_shard")


@dataclass(frozen=True)
class SplitInfo(Document):
    """split.json: the settings, the totals (they reconcile), per-class counts, duplicate
    groups, shards per split and the images per shard; `rest` holds `notes`."""

    FILE: ClassVar[str] = SPLIT_INFO
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "seed": _INT,
        "test_fraction": _NUMBER,
        "val_fraction": _NUMBER,
        "totals": (dict,),
        "fractions": (dict,),
        "per_class": (dict,),
        "duplicates": (dict,),
        "shards": (dict,),
        "images_per_shard": _INT,
    }
    OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {"notes": (list,)}
    seed: int
    test_fraction: float
    val_fraction: float
    totals: dict[str, Any]
    fractions: dict[str, float]
    per_class: dict[str, dict[str, int]]
    duplicates: dict[str, int]
    shards: dict[str, int]
    images_per_shard: int
    rest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AugmentInfo(Document):
    """augment.json: whether train is augmented at train time, and how train was balanced.

    `rest` holds the AugmentConfig fields flat (the train step rebuilds the config from
    them: fauna.training.trainset.augment_settings), then the per-class counts and totals.
    """

    FILE: ClassVar[str] = AUGMENT_INFO
    CHECKED: ClassVar[dict[str, tuple[type, ...]]] = {"train_time_augmentation": (bool,)}
    OPTIONAL: ClassVar[dict[str, tuple[type, ...]]] = {"mode": (str,)}
    rest: dict[str, Any] = field(default_factory=dict)

    @property
    def train_time_augmentation(self) -> bool:
        return bool(self.rest["train_time_augmentation"])
