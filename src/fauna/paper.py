"""The paper's reported test-split results, in one place (see ../shared/PAPER.md).

The comparison report puts these beside our own numbers, but only for a dataset of
the paper's 30 classes (`paper_applies`): on other data they mean nothing. The
paper's "F1" is compared with our macro-F1 (the paper does not say how it averaged;
macro is the honest choice on an imbalanced 30-class problem).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from fauna.config import PAPER_CLASSES


@dataclass(frozen=True)
class PaperResult:
    model: str
    # Our backbone name this row is the reference for ("" = context only).
    backbone: str
    setup: str
    top1: float  # fractions, as our metrics are
    top3: float
    f1: float


# What the paper reported, as our metrics (fauna.score.metrics keys): metric -> (the field
# of `PaperResult` set beside it, the paper's name for it). The paper's "F1" is our macro-F1.
PAPER_METRICS: dict[str, tuple[str, str]] = {
    "top1": ("top1", "top-1"),
    "top3": ("top3", "top-3"),
    "macro_f1": ("f1", "F1"),
}

PAPER_TITLE = "Clasificador Multiclase con Redes Neuronales Convolucionales"

PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult(
        "VGG16 v1",
        "",
        "Kaggle weights, 64x64, no augmentation, 40 epochs",
        0.4774,
        0.6876,
        0.4079,
    ),
    PaperResult(
        "VGG16 v2",
        "vgg16",
        "ImageNet weights, 128 crop, regularisation, 100 epochs, ReduceLROnPlateau",
        0.8441,
        0.9379,
        0.7862,
    ),
    PaperResult(
        "ResNet50",
        "resnet50",
        "smaller batch, no regularisation, fewer epochs, LR 10x VGG's",
        0.8712,
        0.9646,
        0.8201,
    ),
    PaperResult(
        "InceptionV3",
        "inceptionv3",
        "all layers trainable, LR 1e-4, L1 1e-4, batch 32, 50 epochs",
        0.8641,
        0.9507,
        0.8097,
    ),
)


def paper_reference(backbone: str) -> PaperResult | None:
    """The paper's row for one of our backbones, if the paper trained it."""
    for row in PAPER_RESULTS:
        if row.backbone and row.backbone == backbone.lower():
            return row
    return None


def paper_results_dict() -> dict[str, dict[str, Any]]:
    """For metrics.json: model name -> its reported numbers."""
    return {row.model: asdict(row) for row in PAPER_RESULTS}


def paper_applies(classes: Iterable[str]) -> bool:
    """True when a dataset's classes are exactly the paper's 30 (in any order)."""
    return sorted(classes) == sorted(PAPER_CLASSES)
