"""The names steps share, defined once: step names, preprocess modes, document file names."""

from __future__ import annotations

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
HISTORY_JSON = "history.json"
CLASSES = "classes.json"
SOURCE = "source.json"
PREPROCESS_INFO = "preprocess.json"
SPLIT_INFO = "split.json"
AUGMENT_INFO = "augment.json"
# The report's page (compare's output; publish's `report/` folder, also in the bucket).
REPORT_HTML = "report.html"
REPORT_DIR = "report"
# Files of a step's output that compare reads (fauna.report.gather): evaluate's confusion
# matrix plot, t-SNE's info (its backbone, or why no plot was drawn) and plot.
CONFUSION_PNG = "confusion_matrix.png"
TSNE_INFO = "tsne.json"
TSNE_PNG = "tsne.png"
