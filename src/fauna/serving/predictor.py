"""What `fauna serve` does with a request, without KServe: bytes in, top-k species out.

The model is found the way `fauna predict` finds it (a folder, an s3:// prefix,
`champion[:<dataset>]`) and each image goes through the same shared steps as predict's
files: `fauna.data.imaging.preprocess_image` (EXIF orientation, RGB, shorter side resize and
centre crop, the JPEG round trip with the model's preprocess.json settings) and
`fauna.data.input_pipeline.decode_image`, so a served answer equals `fauna predict`'s.

A request is refused with one line (`BadRequest`, answered 400) for an empty body, a
body that is not an image, an image over the byte or pixel limits, or a tensor of the
wrong type or shape. `ChampionFollower` polls the champion pointer's ETag and swaps in
the model it names once that model is loaded; requests in flight finish on the old one.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fauna.config import Config
from fauna.contracts import DEFAULT_PREPROCESS_MODE, PreprocessInfo
from fauna.data.dataset import read_classes
from fauna.errors import FaunaError

log = logging.getLogger(__name__)

# A V1 instance is {"b64": ...} (KServe's and TF Serving's convention), or
# {"image_bytes": {"b64": ...}} as TF Serving image models name it.
B64 = "b64"
IMAGE_BYTES = "image_bytes"
Top = list[tuple[str, float]]


class BadRequest(FaunaError):
    """A request the server refuses: answered 4xx with this one line."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int  # per image
    max_pixels: int  # per image, before decoding (decompression bombs)
    max_images: int  # per request


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise BadRequest(f"{where}: expected a base64 string, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{where}: not valid base64") from None


def images_from_v1(payload: Any) -> list[bytes]:
    """The images of a V1 body: {"instances": [{"b64": ...}, ...]} or one raw image body."""
    if isinstance(payload, (bytes, bytearray)):
        if not bytes(payload).lstrip().startswith(b"{"):
            return [bytes(payload)]  # the raw image as the body (Content-Type image/*)
        try:  # JSON sent without a JSON Content-Type (curl -d)
            payload = json.loads(payload)
        except ValueError:
            raise BadRequest("the body is neither JSON nor an image") from None
    if not isinstance(payload, dict) or "instances" not in payload:
        raise BadRequest('expected {"instances": [{"b64": "<base64 JPEG or PNG>"}, ...]}')
    instances = payload["instances"]
    if not isinstance(instances, list) or not instances:
        raise BadRequest('"instances" must be a non-empty list')
    images = []
    for index, instance in enumerate(instances):
        where = f"instance {index}"
        if isinstance(instance, dict) and isinstance(instance.get(IMAGE_BYTES), dict):
            instance = instance[IMAGE_BYTES]
        if not isinstance(instance, dict) or set(instance) != {B64}:
            raise BadRequest(f'{where}: expected {{"b64": "<base64 JPEG or PNG>"}}')
        images.append(_b64(instance[B64], where))
    return images


def images_from_v2(inputs: Sequence[Any]) -> list[bytes]:
    """The images of a V2 request: one BYTES input of shape [n] (or [n, 1]).

    Elements are raw bytes (binary tensor extension) or base64 strings (JSON).
    """
    if len(inputs) != 1:
        raise BadRequest(f"expected one input (BYTES, shape [n]), got {len(inputs)}")
    tensor = inputs[0]
    if tensor.datatype != "BYTES":
        raise BadRequest(f"input {tensor.name!r}: datatype must be BYTES, not {tensor.datatype}")
    shape = [int(s) for s in tensor.shape]
    data = tensor.data
    data = list(data.ravel()) if hasattr(data, "ravel") else list(data or [])
    if len(shape) not in (1, 2) or (len(shape) == 2 and shape[1] != 1) or shape[0] != len(data):
        raise BadRequest(
            f"input {tensor.name!r}: shape must be [n] or [n, 1] with n = {len(data)} "
            f"images, not {shape}"
        )
    if not data:
        raise BadRequest(f"input {tensor.name!r} holds no image")
    return [
        bytes(item) if isinstance(item, (bytes, bytearray)) else _b64(item, f"image {i}")
        for i, item in enumerate(data)
    ]


def check_count(images: list[bytes], limits: Limits) -> None:
    if len(images) > limits.max_images:
        raise BadRequest(f"{len(images)} images in one request > the limit {limits.max_images}")


@dataclass
class ServedModel:
    """A loaded model with what its inputs need: classes and the preprocess settings."""

    source: str
    model_dir: Path
    classes: list[str]
    image_size: int
    mode: str
    quality: int
    model: Any

    @classmethod
    def load(cls, source: str, cfg: Config) -> ServedModel:
        """Load (downloading an s3:// model once) and run one batch so the first request
        does not pay for tracing."""
        import numpy as np

        from fauna.model.artifact import load_model, resolve_model_uri

        model_dir = resolve_model_uri(source, cfg)
        info = PreprocessInfo.read(model_dir)
        size = info.image_size
        served = cls(
            source=source,
            model_dir=model_dir,
            classes=read_classes(model_dir),
            image_size=size,
            mode=info.mode(DEFAULT_PREPROCESS_MODE),
            quality=int(info.rest.get("jpeg_quality", 95)),
            model=load_model(model_dir),
        )
        served.probabilities([np.zeros((size, size, 3), np.float32)])
        return served

    def pixels(self, data: bytes, limits: Limits, where: str = "image") -> Any:
        """One image's bytes -> float32 (size, size, 3), exactly as predict prepares a file."""
        from fauna.data.imagecheck import ImageRejected, open_image
        from fauna.data.imaging import preprocess_image
        from fauna.data.input_pipeline import decode_image

        if not data:
            raise BadRequest(f"{where}: empty")
        if len(data) > limits.max_bytes:
            raise BadRequest(f"{where}: {len(data)} bytes > the limit {limits.max_bytes}")
        try:
            open_image(data, limits.max_pixels).close()
            encoded = preprocess_image(io.BytesIO(data), self.image_size, self.mode, self.quality)
        except ImageRejected as exc:
            raise BadRequest(f"{where}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - any decoder failure is the request's fault
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            raise BadRequest(f"{where}: cannot read image: {first}") from None
        return decode_image(encoded, self.image_size)

    def probabilities(self, pixels: Sequence[Any]) -> Any:
        """Class probabilities for a batch, the call predict makes."""
        import numpy as np
        import tensorflow as tf

        return np.asarray(self.model(tf.stack(pixels), training=False))

    def top(self, probabilities: Any, k: int) -> list[Top]:
        """(class, probability) pairs, most likely first, as predict orders them."""
        import numpy as np

        k = max(1, min(k, len(self.classes)))
        result = []
        for probs in probabilities:
            best = np.argsort(probs)[::-1][:k]
            result.append([(self.classes[i], float(probs[i])) for i in best])
        return result


def champion_source(spec: str) -> str | None:
    """The dataset part of `champion[:<dataset>]` ("" for any), or None for a model URI."""
    from fauna.model.artifact import CHAMPION

    if spec == CHAMPION or spec.startswith(CHAMPION + ":"):
        return spec.partition(":")[2]
    return None


def load_served(spec: str, cfg: Config) -> ServedModel:
    """The model `spec` names; a champion is resolved by `fauna.store.champion.find_champion`."""
    from fauna.model.artifact import champion_model_uri

    dataset = champion_source(spec)
    return ServedModel.load(spec if dataset is None else champion_model_uri(cfg, dataset), cfg)


class ChampionFollower:
    """Polls a dataset's champion pointer; when its ETag changes, loads the model it names
    and hands it to `swap`. A failed poll or load is one warning and is tried again."""

    def __init__(
        self,
        cfg: Config,
        dataset_key: str,
        model_uri: str,
        swap: Callable[[ServedModel], None],
        interval: float,
    ) -> None:
        self.cfg, self.dataset_key, self.model_uri = cfg, dataset_key, model_uri
        self.swap, self.interval = swap, interval
        self.etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check_once(self) -> bool:
        """Read the pointer; load and swap in a new model when it moved. True if swapped."""
        from fauna.store.champion import read_pointer

        found = read_pointer(self.cfg.pipeline.bucket, self.dataset_key)
        if found is None or found[1] == self.etag:
            return False
        pointer, etag = found
        uri = str(pointer.get("model_uri") or "")
        if not uri or uri == self.model_uri:
            self.etag = etag
            return False
        log.info("the champion of %s moved to %s: loading it", self.dataset_key, uri)
        served = ServedModel.load(uri, self.cfg)
        self.swap(served)
        self.model_uri, self.etag = uri, etag
        log.info("now serving %s", uri)
        return True

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check_once()
            except Exception as exc:  # noqa: BLE001 - keep serving the current model
                log.warning("champion poll failed (still serving %s): %s", self.model_uri, exc)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="champion-follower", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
