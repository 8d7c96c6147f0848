"""The documents of a run: compare's metrics.json (the verdict) and publish.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from fauna.contracts.base import (
    VERSION_KEY,
    Document,
    Stored,
    check_key,
    check_object,
    check_version,
)
from fauna.contracts.names import COMPARISON, PUBLISH_JSON


@dataclass(frozen=True)
class Comparison(Document):
    """compare's metrics.json: the run's champion (or None), the dataset, each backbone.

    `rest` holds the paper's reference numbers (`paper`).
    """

    FILE: ClassVar[str] = COMPARISON
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "champion": (dict, type(None)),
        "metric": (str,),
        "chance": (int, float, type(None)),
        "n_test": (int, type(None)),
        "resolution": (int, float, type(None)),
        "dataset": (dict,),
        "flagged": (dict,),
        "backbones": (dict,),
        "synthetic": (bool,),
    }
    champion: dict[str, Any] | None
    metric: str
    chance: float | None
    n_test: int | None
    resolution: float | None  # the smallest difference the test split can show
    dataset: dict[str, Any]
    flagged: dict[str, str]
    backbones: dict[str, dict[str, Any]]
    synthetic: bool
    rest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Promotion:
    """publish's verdict for the run's candidate against the dataset's champion."""

    promoted: bool
    reason: str
    metric: str
    candidate_value: float | None
    champion_value: float | None
    # True when this run already was the champion (a retried publish): nothing moved.
    already_champion: bool = False


@dataclass(frozen=True)
class PublishResult(Stored):
    """publish.json: where the run was published and the promotion decision."""

    FILE: ClassVar[str] = PUBLISH_JSON
    SCHEMA_VERSION: ClassVar[int] = 1
    run_id: str
    run_uri: str
    report_uri: str
    model_uris: dict[str, str]
    champion_uri: str
    dataset: dict[str, Any]
    promotion: Promotion

    def to_json(self) -> dict[str, Any]:
        return {VERSION_KEY: self.SCHEMA_VERSION, **asdict(self)}

    to_dict = to_json  # the name publish and its tests used before this module

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = PUBLISH_JSON) -> PublishResult:
        check_version(check_object(doc, where), where, cls.SCHEMA_VERSION)
        strs = {k: check_key(doc, k, (str,), where) for k in ("run_id", "run_uri", "report_uri")}
        promo = check_key(doc, "promotion", (dict,), where)
        return cls(
            **strs,
            model_uris=check_key(doc, "model_uris", (dict,), where),
            champion_uri=check_key(doc, "champion_uri", (str,), where),
            dataset=check_key(doc, "dataset", (dict,), where),
            promotion=Promotion(
                promoted=check_key(promo, "promoted", (bool,), f"{where} promotion"),
                reason=check_key(promo, "reason", (str,), f"{where} promotion"),
                metric=check_key(promo, "metric", (str,), f"{where} promotion"),
                candidate_value=promo.get("candidate_value"),
                champion_value=promo.get("champion_value"),
                already_champion=bool(promo.get("already_champion", False)),
            ),
        )
