"""The figures of evaluate, t-SNE, train and the comparison report.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global state, no
display needed), so steps can run headless and in threads. Pages are rendered from
templates (fauna.report.render); `data_uri` inlines a PNG into one.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from fauna.data.dataset import display_name

PNG_DPI = 110


def class_colors(n: int) -> list[Any]:
    """n distinct colours: tab20 + tab20b cover the paper's 30 classes (40 in all)."""
    tab20 = list(matplotlib.colormaps["tab20"].colors)
    tab20b = list(matplotlib.colormaps["tab20b"].colors)
    # Strong tab20 hues, then their light partners, then tab20b: neighbours never look alike.
    palette = tab20[0::2] + tab20[1::2] + tab20b[0::2] + tab20b[1::2]
    if n <= len(palette):
        return palette[:n]
    hsv = matplotlib.colormaps["hsv"]
    return [hsv(i / n) for i in range(n)]


def save_png(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=PNG_DPI, bbox_inches="tight")
    return path


def data_uri(path: Path, mime: str = "") -> str:
    """A file inlined as a data: URI, so one HTML file carries its images (PNG or JPEG)."""
    jpeg = Path(path).suffix.lower() in (".jpg", ".jpeg")
    mime = mime or ("image/jpeg" if jpeg else "image/png")
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    """Row-normalised confusion matrix, readable at 30 classes."""
    cm = np.asarray(cm, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    n = len(classes)
    side = max(5.0, 0.36 * n + 3.0)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="fraction of the true class")
    names = [display_name(c) for c in classes]
    ax.set_xticks(range(n), names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 40:  # annotate: fractions when small, whole percents (>= 1%) otherwise
        small = n <= 12
        for r in range(n):
            for c in range(n):
                v = norm[r, c]
                if v < (0.005 if small else 0.01):
                    continue
                ax.text(
                    c,
                    r,
                    f"{v:.2f}" if small else f"{round(v * 100)}",
                    ha="center",
                    va="center",
                    fontsize=9 if small else 6,
                    color="white" if v > 0.6 else "#1f2328",
                )
    return save_png(fig, path)


def plot_tsne(
    coords: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str
) -> Path:
    """Scatter coloured by class, the legend outside the axes."""
    fig = Figure(figsize=(11, 8))
    ax = fig.add_subplot(1, 1, 1)
    colors = class_colors(len(classes))
    size = 30 if len(labels) < 500 else 12
    for i, name in enumerate(classes):
        pts = coords[labels == i]
        if len(pts):
            ax.scatter(
                pts[:, 0], pts[:, 1], s=size, color=colors[i], label=display_name(name), alpha=0.85
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        markerscale=1.6 if size < 20 else 1.0,
        frameon=False,
        ncol=1 if len(classes) <= 32 else 2,
    )
    return save_png(fig, path)


def plot_history(history: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """The paper's Figs. 5-7: loss, accuracy, AUC (and macro-F1), train vs validation.

    `history` is the train step's history.json: epochs numbered from 0 across both
    phases; a dashed line marks where fine-tuning starts.
    """
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 8), layout="constrained")
    axes = fig.subplots(2, 2).ravel()
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    boundary = next(
        (e - 0.5 for e, h in zip(epochs, history, strict=True) if h.get("phase") == "fine_tune"),
        None,
    )
    titles = {"loss": "loss", "accuracy": "accuracy", "auc": "AUC", "macro_f1": "macro-F1"}
    for ax, (key, label) in zip(axes, titles.items(), strict=True):
        for prefix, name, style in (("", "train", "-o"), ("val_", "validation", "-s")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, markersize=3, label=name)
        if boundary is not None and boundary > 1:
            ax.axvline(boundary, color="grey", linestyle="--", linewidth=1, label="fine-tuning")
        ax.set_title(label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return save_png(fig, path)


STYLES = (("-", "train"), ("--", "validation"))


def plot_learning_curves(
    curves: dict[str, Sequence[dict[str, Any]]], key: str, label: str, path: Path
) -> Path:
    """Every backbone's `key` per epoch on one chart: train solid, validation dashed.

    One colour per backbone, so their curves can be read against each other; epochs are
    numbered from 1 and the ticks are whole numbers.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    keys = []
    for color, (backbone, history) in zip(class_colors(len(curves)), curves.items(), strict=True):
        epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
        for prefix, style in (("", "-"), ("val_", "--")):
            points = [(e, h.get(prefix + key)) for e, h in zip(epochs, history, strict=True)]
            points = [(e, v) for e, v in points if v is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, style, color=color, marker="o", markersize=3)
        keys.append(Line2D([], [], color=color, label=backbone))
    # One entry per backbone (its colour) and one per line style: n + 2 entries, not 2n.
    keys += [Line2D([], [], color="grey", linestyle=s, label=n) for s, n in STYLES]
    ax.set_title(label)
    ax.set_xlabel("epoch")
    ax.set_ylabel(label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(handles=keys, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save_png(fig, path)
