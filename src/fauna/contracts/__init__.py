"""The documents steps hand each other, and the names they share, defined once.

    classes.json      ingest → every step, the model folder, serving   `Classes`
    source.json       ingest → every step, the model folder (carried)  `SourceInfo`
    preprocess.json   preprocess → split, augment, train, evaluate, serving `PreprocessInfo`
    split.json        split → augment                                  `SplitInfo`
    augment.json      augment → train (train-time augmentation)        `AugmentInfo`
    history.json      train → the report (curves, the tie-break)       `History`
    train_info.json   train → evaluate, compare, publish, registry     `TrainInfo`
    metrics.json      evaluate → compare (report rows), t-SNE          `EvalMetrics`
    metrics.json      compare → publish, registry (the run's verdict)  `Comparison`
    publish.json      publish → registry, local runs, the CronJob      `PublishResult`

Each is a small frozen dataclass with `to_json` (the dict written: `schema_version` first,
then key for key what earlier versions wrote, so old artifacts and the docs stay valid),
`write`, and `from_json`/`read` (a missing key, a wrong type or a version newer than this
fauna knows is one line naming the file and the key, never a KeyError traceback). Keys a
document holds beyond the typed ones travel in `rest`, in their order. One module per
family: `names` (step and file names), `base` (reading, checking, versions), `dataset`,
`model`, `run`. Only the standard library and fauna.errors are imported here: every layer
may use it.
"""

from fauna.contracts.base import (
    VERSION_KEY,
    ContractError,
    load_document,
    load_json,
    parse_document,
    parse_json,
)
from fauna.contracts.dataset import AugmentInfo, Classes, PreprocessInfo, SourceInfo, SplitInfo
from fauna.contracts.model import EvalMetrics, History, TrainInfo
from fauna.contracts.names import (
    AUGMENT_INFO,
    AUGMENT_STEP,
    CLASSES,
    COMPARE_STEP,
    COMPARISON,
    CONFUSION_PNG,
    CROP,
    DATA_STEPS,
    DEFAULT_PREPROCESS_MODE,
    EVAL_METRICS,
    EVALUATE_STEP,
    HISTORY_JSON,
    INGEST_STEP,
    PREPROCESS_INFO,
    PREPROCESS_MODES,
    PREPROCESS_STEP,
    PUBLISH_JSON,
    PUBLISH_STEP,
    REPORT_DIR,
    REPORT_HTML,
    SOURCE,
    SPLIT_INFO,
    SPLIT_STEP,
    STRETCH,
    TRAIN_INFO,
    TRAIN_STEP,
    TSNE_INFO,
    TSNE_PNG,
    TSNE_STEP,
)
from fauna.contracts.run import Comparison, Promotion, PublishResult

__all__ = [
    "AUGMENT_INFO",
    "AUGMENT_STEP",
    "CLASSES",
    "COMPARE_STEP",
    "COMPARISON",
    "CONFUSION_PNG",
    "CROP",
    "DATA_STEPS",
    "DEFAULT_PREPROCESS_MODE",
    "EVALUATE_STEP",
    "EVAL_METRICS",
    "HISTORY_JSON",
    "INGEST_STEP",
    "PREPROCESS_INFO",
    "PREPROCESS_MODES",
    "PREPROCESS_STEP",
    "PUBLISH_JSON",
    "PUBLISH_STEP",
    "REPORT_DIR",
    "REPORT_HTML",
    "SOURCE",
    "SPLIT_INFO",
    "SPLIT_STEP",
    "STRETCH",
    "TRAIN_INFO",
    "TRAIN_STEP",
    "TSNE_INFO",
    "TSNE_PNG",
    "TSNE_STEP",
    "VERSION_KEY",
    "AugmentInfo",
    "Classes",
    "Comparison",
    "ContractError",
    "EvalMetrics",
    "History",
    "PreprocessInfo",
    "Promotion",
    "PublishResult",
    "SourceInfo",
    "SplitInfo",
    "TrainInfo",
    "load_document",
    "load_json",
    "parse_document",
    "parse_json",
]
