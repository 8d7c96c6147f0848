"""predict: the top species for some images, with a trained model.

Images go through exactly what the training images went through: the preprocess
step's own resize (crop or stretch, EXIF orientation, RGB) and JPEG encoding with
the settings in the model's preprocess.json, then the training pipeline's decoder.
The model itself applies the backbone's normalisation. A file that cannot be read
gets a one-line error; the other files are still predicted.

--model takes a model folder (a train step output), an s3:// prefix holding one
(downloaded once into ~/.cache/fauna/models), `champion` (the champion of the only
dataset with one in `pipeline.bucket`, or of the dataset named `data.name` when several
have one) or `champion:<dataset>` (a dataset's name or key, e.g. animals30-3f2a9c1b).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fauna.config import Config
from fauna.contracts import DEFAULT_PREPROCESS_MODE, PreprocessInfo
from fauna.data.dataset import display_name, read_classes
from fauna.model.artifact import CHAMPION as CHAMPION
from fauna.model.artifact import champion_model_uri as champion_model_uri
from fauna.model.artifact import resolve_model_uri

BATCH_SIZE = 32


@dataclass
class Prediction:
    path: Path
    # (class name, probability), most likely first.
    top: list[tuple[str, float]] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "top": [{"label": label, "probability": p} for label, p in self.top],
            "error": self.error,
        }


# ---------------------------------------------------------------------- prediction


def prepare_image(path: Path, size: int, mode: str, quality: int):
    """One file -> float32 (size, size, 3) pixels in [0, 255], as training saw them."""
    from fauna.data.imaging import preprocess_image
    from fauna.data.input_pipeline import decode_image

    return decode_image(preprocess_image(Path(path), size, mode, quality), size)


class Predictions(list):
    """The predictions in the order asked, and a warning when the model cannot be trusted."""

    warning: str | None = None


def model_warning(model: Any, outputs: Any, size: int, classes: Sequence[str]) -> str | None:
    """One line when the model's answers mean nothing: non-finite outputs (it diverged in
    training), or the same probabilities for the images and for blank and noise probes
    alike (a collapsed model: one class for everything)."""
    import numpy as np

    shape = (size, size, 3)
    noise = np.random.default_rng(0).uniform(0, 255, shape)
    probes = np.stack([np.zeros(shape), np.full(shape, 255.0), noise]).astype("float32")
    answers = np.concatenate(
        [np.asarray(outputs).reshape(-1, len(classes)), np.asarray(model(probes, training=False))]
    )
    if not np.isfinite(answers).all():
        return (
            "the model's outputs are not finite (NaN): it diverged in training, "
            "so these answers mean nothing — retrain it with a lower learning rate"
        )
    if np.ptp(answers, axis=0).max() < 1e-3:
        name = display_name(classes[int(np.argmax(answers[0]))])
        return (
            f"the model answers {name} ({answers[0].max():.2%}) for every image, blank and "
            "noise probes included: it learned nothing, so these answers mean nothing"
        )
    return None


def predict_images(
    model_dir: str | Path, images: Sequence[str | Path], top_k: int = 3
) -> Predictions:
    """Top-k (class, probability) per image; unreadable images get an error instead."""
    import numpy as np
    import tensorflow as tf

    from fauna.model.artifact import load_model

    model_dir = Path(model_dir)
    classes = read_classes(model_dir)
    info = PreprocessInfo.read(model_dir)
    size, mode = info.image_size, info.mode(DEFAULT_PREPROCESS_MODE)
    quality = int(info.rest.get("jpeg_quality", 95))
    model = load_model(model_dir)
    k = max(1, min(top_k, len(classes)))

    results = Predictions(Prediction(Path(p)) for p in images)
    outputs = []
    for start in range(0, len(results), BATCH_SIZE):
        batch = results[start : start + BATCH_SIZE]
        pixels, ready = [], []
        for item in batch:
            try:
                pixels.append(prepare_image(item.path, size, mode, quality))
                ready.append(item)
            except Exception as exc:  # every unreadable file gets its reason, the rest go on
                item.error = f"cannot read image: {_reason(exc)}"
        if not ready:
            continue
        probabilities = np.asarray(model(tf.stack(pixels), training=False))
        outputs.append(probabilities)
        for item, probs in zip(ready, probabilities, strict=True):
            best = np.argsort(probs)[::-1][:k]
            item.top = [(classes[i], float(probs[i])) for i in best]
    results.warning = model_warning(
        model, np.concatenate(outputs or [np.zeros((0, len(classes)))]), size, classes
    )
    return results


def _reason(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help="model folder, s3://bucket/prefix of one, 'champion' (the promoted model; "
        "'champion:<dataset>' when several datasets have one)",
    )
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--top-k", type=int, default=3, help="how many species to show")
    parser.add_argument("--json", action="store_true", help="print JSON lines instead of text")


def run(args: Any, cfg: Config) -> int:
    model_dir = resolve_model_uri(args.model, cfg)
    predictions = predict_images(model_dir, args.images, top_k=args.top_k)
    if predictions.warning:
        print(f"fauna predict: warning: {predictions.warning}", file=sys.stderr, flush=True)
    for pred in predictions:
        if args.json:
            print(json.dumps(pred.to_dict()))
        elif pred.ok:
            print(pred.path)
            for rank, (label, prob) in enumerate(pred.top, 1):
                print(f"  {rank}. {display_name(label):<20} {prob:7.2%}")
        if not pred.ok:
            print(f"fauna predict: {pred.path}: {pred.error}", file=sys.stderr)
    failed = sum(not p.ok for p in predictions)
    if failed:
        print(f"fauna predict: {failed} of {len(predictions)} image(s) failed", file=sys.stderr)
    return 1 if failed else 0
