"""The one backbone registry: the paper's three plus every `keras.applications` model.

Each entry knows its constructor, how its module preprocesses pixels (rebuilt from
standard Keras layers in fauna.model.network, so a saved model loads with plain Keras) and
the smallest input it accepts. Names are case-insensitive: `vgg16`, `ResNet50`,
`efficientnetv2b0`, `convnexttiny`, ...
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from fauna.errors import FaunaError

PAPER_BACKBONES = ("vgg16", "resnet50", "inceptionv3")

# Keras' own minimums with include_top=False (everything else accepts 32 px).
MIN_INPUT_SIZE = {"inceptionv3": 75, "inceptionresnetv2": 75, "xception": 71}
DEFAULT_MIN_INPUT_SIZE = 32

# How each keras.applications module's `preprocess_input` treats raw [0, 255] RGB pixels:
#   caffe    RGB -> BGR, minus the ImageNet mean per channel
#   tf       scaled to [-1, 1]
#   torch    scaled to [0, 1], then standardised per channel (ImageNet mean and std)
#   builtin  pass-through: the network rescales/normalises inside itself
PREPROCESSING = {
    "vgg16": "caffe",
    "vgg19": "caffe",
    "resnet": "caffe",
    "resnet_v2": "tf",
    "inception_v3": "tf",
    "inception_resnet_v2": "tf",
    "xception": "tf",
    "mobilenet": "tf",
    "mobilenet_v2": "tf",
    "nasnet": "tf",
    "densenet": "torch",
    "efficientnet": "builtin",
    "efficientnet_v2": "builtin",
    "convnext": "builtin",
    "mobilenet_v3": "builtin",
}


class BackboneError(FaunaError, ValueError):
    """An unknown backbone, an input too small for it, or unusable weights."""


@dataclass(frozen=True)
class Backbone:
    name: str  # registry key (lowercase)
    constructor: Callable[..., Any]
    preprocess_input: Callable[[Any], Any]  # the module's own function (the reference)
    module: str  # the keras.applications module it comes from
    min_input_size: int
    preprocessing: str  # caffe | tf | torch | builtin (see PREPROCESSING); "" = unknown

    def build(self, image_size: int, weights: str) -> Any:
        """The convolutional base (include_top=False) for square RGB inputs of `image_size`.

        Constructors get no `name=`: EfficientNetV2 looks its block layout up by that
        argument (`KeyError: 'backbone'`); the base is renamed afterwards instead.
        """
        check_input_size(self, image_size)
        check_preprocessing(self)
        try:
            base = self.constructor(
                include_top=False,
                weights=resolve_weights(weights),
                input_shape=(image_size, image_size, 3),
            )
        except ValueError as exc:  # e.g. ImageNet weights that need a fixed input size
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BackboneError(
                f"cannot build {self.name} at {image_size} px with weights={weights!r}: "
                f"{first[:300]}"
            ) from None
        except Exception as exc:
            if not _is_download_failure(exc):
                raise
            raise BackboneError(
                f"cannot download ImageNet weights for {self.name} (no internet?): "
                "use --set train.weights=none, a weights file or an s3:// URI"
            ) from None
        base.name = "backbone"
        return base


def _is_download_failure(exc: Exception) -> bool:
    """Keras' `get_file` turns a failed download into a bare `Exception("URL fetch failure
    on …")` raised while handling urllib's URLError (keras/src/utils/file_utils.py)."""
    import urllib.error

    return isinstance(exc.__context__, urllib.error.URLError) and str(exc).startswith(
        "URL fetch failure"
    )


@cache
def registry() -> dict[str, Backbone]:
    """Every keras.applications constructor by lowercase name (imports Keras once)."""
    import keras

    found: dict[str, Backbone] = {}
    for attr in dir(keras.applications):
        ctor = getattr(keras.applications, attr)
        if not attr[:1].isupper() or not callable(ctor):
            continue
        module_name = ctor.__module__.rsplit(".", 1)[-1]
        public = getattr(keras.applications, module_name, None)
        module = public if hasattr(public, "preprocess_input") else None
        module = module or importlib.import_module(ctor.__module__)
        name = attr.lower()
        found[name] = Backbone(
            name=name,
            constructor=ctor,
            preprocess_input=module.preprocess_input,
            module=f"keras.applications.{module_name}",
            min_input_size=MIN_INPUT_SIZE.get(name, DEFAULT_MIN_INPUT_SIZE),
            preprocessing=PREPROCESSING.get(module_name, ""),
        )
    return found


def normalize_name(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def get_backbone(name: str) -> Backbone:
    """The registry entry for `name` (case-insensitive), or a clear error listing the known ones."""
    key = normalize_name(name)
    known = registry()
    if key not in known:
        others = ", ".join(sorted(set(known) - set(PAPER_BACKBONES)))
        raise BackboneError(
            f"unknown backbone {name!r}: use one of the paper's ({', '.join(PAPER_BACKBONES)}) "
            f"or any keras.applications model ({others})"
        )
    return known[key]


def check_names(names: Iterable[str], where: str) -> None:
    """Refuse (one line) any name in `names` that is not a registered backbone."""
    known = registry()
    unknown = [name for name in names if normalize_name(name) not in known]
    if unknown:
        raise BackboneError(
            f"unknown backbone(s) in {where}: {', '.join(map(repr, unknown))} "
            f"(e.g. {', '.join(PAPER_BACKBONES)}; any keras.applications model by its name)"
        )


def check_preprocessing(backbone: Backbone) -> None:
    """Refuse a backbone whose pixel preprocessing fauna cannot rebuild (a newer module).

    Every family in the registry also learns from random weights (docs/training.md,
    "Every family learns from scratch"), so no start is refused for any of them.
    """
    if not backbone.preprocessing:
        raise BackboneError(
            f"{backbone.name}: fauna does not know how {backbone.module} preprocesses pixels "
            "(add it to fauna.model.backbones.PREPROCESSING)"
        )


def check_input_size(backbone: Backbone, image_size: int) -> None:
    if image_size < backbone.min_input_size:
        raise BackboneError(
            f"{backbone.name} needs images of at least {backbone.min_input_size} px, "
            f"got {image_size}: preprocess with a larger preprocess.image_size"
        )


def cache_dir(*parts: str) -> Path:
    """A local cache for downloads (weights, models): $FAUNA_CACHE_DIR or ~/.cache/fauna."""
    root = os.environ.get("FAUNA_CACHE_DIR") or Path.home() / ".cache" / "fauna"
    path = Path(root, *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _is_none(weights: str) -> bool:
    return (weights or "").strip().lower() in ("", "none", "null")


def is_pretrained(weights: str) -> bool:
    """imagenet or a weights file (statistics worth protecting), not random `none`."""
    return not _is_none(weights)


def resolve_weights(weights: str) -> str | None:
    """`imagenet` | `none` | a local file | an s3:// URI (downloaded once into the cache).

    The result is what keras.applications takes as `weights=`: "imagenet", None or
    a local path (Keras then calls `load_weights` on the new base). Clusters without
    internet put Keras' `*_notop.h5` files in S3 and pass their URI.
    """
    text = (weights or "").strip()
    if _is_none(text):
        return None
    if text.lower() == "imagenet":
        return "imagenet"
    if text.startswith("s3://"):
        from fauna.store import storage

        digest = hashlib.sha256(text.encode()).hexdigest()[:16]
        local = cache_dir("weights", digest) / text.rsplit("/", 1)[-1]
        if not local.is_file():
            partial = local.with_name(local.name + ".partial")
            storage.download_file(text, partial)
            partial.replace(local)
        return str(local)
    path = Path(text).expanduser()
    if not path.is_file():
        raise BackboneError(
            f"weights file not found: {text} (use imagenet, none, a file or an s3:// URI)"
        )
    return str(path)
