"""The model artifact: what a train step output folder holds, and the one way to load it.

    model.keras         the trained model (no optimizer state)
    export/1/           the same model as a TF Serving SavedModel
    train_info.json     backbone, weights, image size, timings, settings
    history.json/.csv/.png, classes.json, preprocess.json, source.json, augment.json

Every step that reads a model (evaluate, t-SNE, publish, predict) goes through here, and so
does `fauna serve`: `resolve_model_uri` finds a model folder (a path, s3://, the champion).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fauna import timing
from fauna.contracts import HISTORY_JSON as HISTORY_JSON
from fauna.contracts import TRAIN_INFO as TRAIN_INFO
from fauna.contracts import TrainInfo, load_document
from fauna.errors import FaunaError

if TYPE_CHECKING:
    from fauna.config import Config

MODEL_FILE = "model.keras"
EXPORT_DIR = "export"
SERVING_VERSION = "1"
HISTORY_CSV = "history.csv"
HISTORY_PNG = "history.png"
# `--model champion[:<dataset>]`: the dataset's champion (fauna.store.champion's pointer).
CHAMPION = "champion"


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


def model_backbone(model_dir: Path) -> str:
    """The backbone a train step output holds (train_info.json; else the folder's name)."""
    return str(model_info(model_dir)["backbone"])


@timing.timed("data_in")
def load_model(model_dir: Path, *, compile: bool = False) -> Any:
    """The saved Keras model of a train step output (inference needs no optimizer)."""
    return load_model_file(model_path(model_dir), compile=compile)


def load_model_file(path: Path | str, *, compile: bool = False) -> Any:
    """Load one `.keras` file; a damaged or foreign file is one line, not a traceback.

    Models fauna saves are standard Keras layers (plain `keras.saving.load_model`
    loads them); fauna.model.network is imported only for models saved by older versions.
    """
    import keras

    import fauna.model.network  # noqa: F401  (registers the legacy preprocessing layer)

    try:
        return keras.saving.load_model(path, compile=compile)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelArtifactError(f"cannot load {path}: {first[:300]}") from None


# ------------------------------------------------------------------ where a model comes from


def resolve_model_uri(text: str, cfg: Config) -> Path:
    """A local model folder for `text`: a folder, an s3:// prefix, `champion[:<dataset>]`."""
    if text == CHAMPION or text.startswith(CHAMPION + ":"):
        return resolve_model_uri(champion_model_uri(cfg, text.partition(":")[2]), cfg)
    if text.startswith("s3://"):
        return download_model(text)
    path = Path(text).expanduser()
    if path.is_file() and path.name == MODEL_FILE:
        path = path.parent
    if not (path / MODEL_FILE).is_file():
        raise ModelArtifactError(f"not a trained model folder (no {MODEL_FILE}): {text}")
    return path


def champion_model_uri(cfg: Config, dataset: str = "") -> str:
    """The model URI of a dataset's champion in the pipeline bucket (see fauna.store.champion)."""
    from fauna.store.champion import ChampionError, find_champion

    pointer = find_champion(cfg.pipeline.bucket, dataset, cfg.data.name)
    if not pointer.get("model_uri"):
        raise ChampionError(f"the champion pointer of {dataset or 'the dataset'} names no model")
    return str(pointer["model_uri"])


def download_model(uri: str) -> Path:
    """Download an s3:// model folder into the cache; reused while the objects are unchanged."""
    from fauna.model.backbones import cache_dir
    from fauna.store import storage

    listing = sorted(storage.list_keys(uri))
    if not listing:
        raise ModelArtifactError(f"nothing found under {uri}")
    signature = hashlib.sha256(json.dumps(listing).encode()).hexdigest()
    target = cache_dir("models") / hashlib.sha256(uri.encode()).hexdigest()[:16]
    marker = target / ".fauna-download.json"
    if marker.is_file() and json.loads(marker.read_text()).get("signature") == signature:
        return target
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        storage.download_dir(uri, staging)
        if not (staging / MODEL_FILE).is_file():
            raise ModelArtifactError(f"not a trained model (no {MODEL_FILE}) under {uri}")
        (staging / marker.name).write_text(json.dumps({"uri": uri, "signature": signature}))
        if target.exists():
            shutil.rmtree(target)
        staging.replace(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
