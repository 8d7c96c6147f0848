"""The model artifact: what a train step output folder holds, and the one way to load it.

    model.keras         the trained model (no optimizer state)
    export/1/           the same model as a TF Serving SavedModel
    train_info.json     backbone, weights, image size, timings, settings
    history.json/.csv/.png, classes.json, preprocess.json, source.json, augment.json

Every step that reads a model (evaluate, t-SNE, publish, predict) goes through here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fauna import timing
from fauna.contracts import TRAIN_INFO as TRAIN_INFO
from fauna.contracts import TrainInfo, load_document
from fauna.errors import FaunaError

MODEL_FILE = "model.keras"
EXPORT_DIR = "export"
SERVING_VERSION = "1"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"


class ModelArtifactError(FaunaError):
    """A folder is not a usable trained model."""


def model_path(model_dir: Path) -> Path:
    """model.keras in a train step output, or a clear error naming the folder."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelArtifactError(f"no {MODEL_FILE} in {model_dir}: is this a train step output?")
    return path


def model_info(model_dir: Path) -> dict[str, Any]:
    """train_info.json (backbone, timings), or a minimal stand-in named after the folder.

    A train_info.json that is there is checked (fauna.contracts.TrainInfo): a damaged one
    is one line naming the key, not a KeyError later.
    """
    path = Path(model_dir) / TRAIN_INFO
    if not path.is_file():
        return {"backbone": Path(model_dir).name}
    return TrainInfo.from_json(load_document(path), str(path)).to_json()


@timing.timed("data_in")
def load_model(model_dir: Path, *, compile: bool = False) -> Any:
    """The saved Keras model of a train step output (inference needs no optimizer)."""
    return load_model_file(model_path(model_dir), compile=compile)


def load_model_file(path: Path | str, *, compile: bool = False) -> Any:
    """Load one `.keras` file; a damaged or foreign file is one line, not a traceback.

    Models fauna saves are standard Keras layers (plain `keras.saving.load_model`
    loads them); fauna.model is imported only for models saved by older versions.
    """
    import keras

    import fauna.model  # noqa: F401  (registers the legacy preprocessing layer)

    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelArtifactError(f"cannot load {path}: {first[:300]}") from None
