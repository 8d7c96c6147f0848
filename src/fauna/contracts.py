"""The documents steps hand each other, and the names they share, defined once.

    metrics.json      evaluate → compare (report rows), t-SNE      `EvalMetrics`
    train_info.json   train → evaluate, compare, publish, registry `TrainInfo`
    metrics.json      compare → publish, registry (the run's verdict) `Comparison`
    publish.json      publish → registry, local runs, the CronJob   `PublishResult`

Each is a small frozen dataclass with `to_json` (the dict written, key for key what
earlier versions wrote, so old artifacts and the docs stay valid) and `from_json`/`read`
(a missing key or a wrong type is one line naming the file and the key, never a
KeyError traceback). Keys a document holds beyond the typed ones travel in `rest`,
in their order. Only the standard library is imported here: every layer may use it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from fauna.errors import FaunaError

# The steps, by the name their completion marker records (fauna.step_output).
INGEST_STEP = "ingest"
PREPROCESS_STEP = "preprocess"
SPLIT_STEP = "split"
AUGMENT_STEP = "augment"
TRAIN_STEP = "train"
EVALUATE_STEP = "evaluate"
TSNE_STEP = "tsne"
COMPARE_STEP = "compare"
PUBLISH_STEP = "publish"
# What a model step reads as `--data`: a split, balanced by augment or not.
DATA_STEPS = (SPLIT_STEP, AUGMENT_STEP)

# How preprocess makes an image square (fauna.data.imaging.transform); the first is the default.
CROP, STRETCH = PREPROCESS_MODES = ("crop", "stretch")
DEFAULT_PREPROCESS_MODE = CROP

# The documents' file names. Two are called metrics.json (in different step outputs).
EVAL_METRICS = "metrics.json"
COMPARISON = "metrics.json"
TRAIN_INFO = "train_info.json"
PUBLISH_JSON = "publish.json"
# The report's page (compare's output; publish's `report/` folder, also in the bucket).
REPORT_HTML = "report.html"
REPORT_DIR = "report"
# Files of a step's output that compare reads (fauna.report.gather): evaluate's confusion
# matrix plot, t-SNE's info (its backbone, or why no plot was drawn) and plot.
CONFUSION_PNG = "confusion_matrix.png"
TSNE_INFO = "tsne.json"
TSNE_PNG = "tsne.png"


class ContractError(FaunaError):
    """A document between steps is missing, unreadable or lacks a key (one line)."""


_TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true/false"}
_TYPE_NAMES |= {dict: "an object", list: "a list", type(None): "null"}


def load_document(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or one line saying what is wrong with the file."""
    path = Path(path)
    if not path.is_file():
        raise ContractError(f"missing {path.name} in {path.parent}: is this the right step output?")
    return parse_document(path.read_text(), str(path))


def parse_document(text: str, where: str) -> dict[str, Any]:
    """A JSON object from `text` read from `where` (a path or an s3:// URI)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ContractError(f"{where} is not valid JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise ContractError(f"{where} must hold a JSON object, not {type(doc).__name__}")
    return doc


def _check(doc: dict[str, Any], key: str, types: tuple[type, ...], where: str) -> Any:
    """doc[key] when present and of one of `types` (a bool is not a number)."""
    if key not in doc:
        raise ContractError(f"{where} has no {key!r}: written by another tool or damaged")
    value = doc[key]
    numeric = any(t in (int, float) for t in types) and bool not in types
    if not isinstance(value, types) or (numeric and isinstance(value, bool)):
        wanted = " or ".join(dict.fromkeys(_TYPE_NAMES.get(t, t.__name__) for t in types))
        raise ContractError(f"{where}: {key!r} must be {wanted}, got {value!r:.80}")
    return value


class _Document:
    """The shared read/write of a document: typed fields first, then `rest` in order."""

    FILE: ClassVar[str]
    # Field name -> the JSON types it accepts (checked by from_json), in the written order.
    TYPES: ClassVar[dict[str, tuple[type, ...]]]

    def to_json(self) -> dict[str, Any]:
        typed = {name: getattr(self, name) for name in self.TYPES}
        return {**typed, **getattr(self, "rest", {})}

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = "") -> Any:
        where = where or cls.FILE
        typed = {k: _check(doc, k, t, where) for k, t in cls.TYPES.items()}
        rest = {k: v for k, v in doc.items() if k not in typed}
        return cls(**typed, rest=rest)  # type: ignore[call-arg]

    @classmethod
    def read(cls, folder: Path) -> Any:
        """The document in a step output folder."""
        path = Path(folder) / cls.FILE
        return cls.from_json(load_document(path), str(path))


_OPT_STR = (str, type(None))


@dataclass(frozen=True)
class EvalMetrics(_Document):
    """evaluate's metrics.json: one model's test-split scores and its degenerate verdict.

    `rest` holds n_test, every metric of fauna.score.metrics (`score`), per-split details and
    `degenerate`/`degenerate_reason`/`prediction_diversity`, in the order written.
    """

    FILE: ClassVar[str] = EVAL_METRICS
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "backbone": (str,),
        "weights": _OPT_STR,
        "image_size": (int,),
        "synthetic": (bool,),
    }
    backbone: str
    weights: str | None
    image_size: int
    synthetic: bool
    rest: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = "") -> EvalMetrics:
        found = super().from_json(doc, where)
        for key, types in (("n_test", (int,)), ("degenerate", (bool,))):
            _check(doc, key, types, where or cls.FILE)
        return found

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
class TrainInfo(_Document):
    """train's train_info.json: what was trained, on what, how long (the rest in `rest`)."""

    FILE: ClassVar[str] = TRAIN_INFO
    TYPES: ClassVar[dict[str, tuple[type, ...]]] = {
        "backbone": (str,),
        "weights": _OPT_STR,
        "image_size": (int,),
    }
    backbone: str
    weights: str | None
    image_size: int
    rest: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Comparison(_Document):
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
class PublishResult:
    """publish.json: where the run was published and the promotion decision."""

    FILE: ClassVar[str] = PUBLISH_JSON
    run_id: str
    run_uri: str
    report_uri: str
    model_uris: dict[str, str]
    champion_uri: str
    dataset: dict[str, Any]
    promotion: Promotion

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    to_dict = to_json  # the name publish and its tests used before this module

    @classmethod
    def from_json(cls, doc: dict[str, Any], where: str = PUBLISH_JSON) -> PublishResult:
        strs = {k: _check(doc, k, (str,), where) for k in ("run_id", "run_uri", "report_uri")}
        promo = _check(doc, "promotion", (dict,), where)
        return cls(
            **strs,
            model_uris=_check(doc, "model_uris", (dict,), where),
            champion_uri=_check(doc, "champion_uri", (str,), where),
            dataset=_check(doc, "dataset", (dict,), where),
            promotion=Promotion(
                promoted=_check(promo, "promoted", (bool,), f"{where} promotion"),
                reason=_check(promo, "reason", (str,), f"{where} promotion"),
                metric=_check(promo, "metric", (str,), f"{where} promotion"),
                candidate_value=promo.get("candidate_value"),
                champion_value=promo.get("champion_value"),
                already_champion=bool(promo.get("already_champion", False)),
            ),
        )

    @classmethod
    def read(cls, folder: Path) -> PublishResult:
        path = Path(folder) / PUBLISH_JSON
        return cls.from_json(load_document(path), str(path))
