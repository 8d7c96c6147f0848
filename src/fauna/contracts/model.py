"""The documents of a trained and an evaluated model: train_info.json, history.json, and
evaluate's metrics.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from fauna.contracts.base import Document, Stored, check_key, check_list, check_value
from fauna.contracts.names import EVAL_METRICS, HISTORY_JSON, TRAIN_INFO

OPT_STR = (str, type(None))


@dataclass(frozen=True)
class EvalMetrics(Document):
    """evaluate's metrics.json: one model's test-split scores and its degenerate verdict.

    `rest` holds n_test, every metric of fauna.score.metrics (`score`), per-split details and
    `degenerate`/`degenerate_reason`/`prediction_diversity`, in the order written.
    """

    FILE: ClassVar[str] = EVAL_METRICS
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "backbone": (str,),
        "weights": OPT_STR,
        "image_size": (int,),
        "synthetic": (bool,),
    }
    backbone: str
    weights: str | None
    image_size: int
    synthetic: bool
    CHECKED: ClassVar[dict[str, tuple[type, ...]]] = {"n_test": (int,), "degenerate": (bool,)}
    rest: dict[str, Any] = field(default_factory=dict)

    def score(self, key: str) -> float | None:
        """One metric (None where it is undefined, e.g. ROC-AUC with one class)."""
        return self.rest.get(key)

    @property
    def n_test(self) -> int:
        return int(self.rest["n_test"])

    @property
    def degenerate(self) -> bool:
        return bool(self.rest["degenerate"])

    @property
    def degenerate_reason(self) -> str | None:
        return self.rest.get("degenerate_reason")


@dataclass(frozen=True)
class TrainInfo(Document):
    """train's train_info.json: what was trained, on what, how long (the rest in `rest`)."""

    FILE: ClassVar[str] = TRAIN_INFO
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "backbone": (str,),
        "weights": OPT_STR,
        "image_size": (int,),
    }
    backbone: str
    weights: str | None
    image_size: int
    rest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class History(Stored):
    """train's history.json: one object per epoch, numbered from 0 across the phases.

    Each holds `epoch` (checked), `phase`, the learning rate, the train and `val_` metrics
    and the epoch's timings. A JSON list, so its version is its shape (fauna.contracts.base).
    """

    FILE: ClassVar[str] = HISTORY_JSON
    SCHEMA_VERSION: ClassVar[int] = 1
    epochs: tuple[dict[str, Any], ...]

    def to_json(self) -> list[dict[str, Any]]:
        return [dict(entry) for entry in self.epochs]

    @classmethod
    def from_json(cls, doc: Any, where: str = HISTORY_JSON) -> History:
        entries = check_list(doc, where, cls.SCHEMA_VERSION)
        for i, entry in enumerate(entries):
            check_value(entry, f"entry {i}", (dict,), where)
            check_key(entry, "epoch", (int,), f"{where} entry {i}")
        return cls(tuple(entries))

    def entry(self, epoch: Any) -> dict[str, Any] | None:
        """The entry of the epoch whose weights were kept (`epoch` an index), else the last."""
        if not self.epochs:
            return None
        inside = isinstance(epoch, int) and 0 <= epoch < len(self.epochs)
        return self.epochs[epoch] if inside else self.epochs[-1]
