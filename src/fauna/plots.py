"""Small plotting and HTML helpers shared by evaluate, t-SNE and the comparison report.

Figures are built with `matplotlib.figure.Figure` (no pyplot, no global state, no
display needed), so steps can run headless and in threads.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

PNG_DPI = 110

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       max-width: 1150px; margin: 2em auto; padding: 0 1em; color: #1f2328; line-height: 1.45; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.92em; }
th, td { border: 1px solid #d0d7de; padding: 4px 9px; text-align: right; }
th { background: #f6f8fa; }
td.text, th.text { text-align: left; }
tr:nth-child(even) td { background: #fbfcfd; }
tr.paper td, td.ref { color: #57606a; font-style: italic; }
img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figure { margin: 1em 0; }
figcaption { color: #57606a; font-size: 0.9em; }
.warning { background: #fff1e6; border: 3px solid #d9480f; color: #7a2600; padding: 1em 1.2em;
           font-size: 1.15em; font-weight: 600; border-radius: 6px; }
.note { background: #eef6ff; border-left: 5px solid #0969da; padding: .6em 1em; }
.champion { background: #e9f7ec; border-left: 5px solid #1a7f37; padding: .6em 1em;
            font-size: 1.1em; }
.columns { display: flex; flex-wrap: wrap; gap: 0 1.2em; align-items: flex-start; }
.columns table { font-size: 0.85em; }
.columns th, .columns td { padding: 3px 6px; }
code { background: #f6f8fa; padding: 0 .3em; border-radius: 3px; }
.muted { color: #57606a; }
"""


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


def data_uri(path: Path, mime: str = "image/png") -> str:
    """A file inlined as a data: URI, so one HTML file carries its images."""
    return f"data:{mime};base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def html_page(title: str, body: str) -> str:
    """A complete self-contained HTML document (inline CSS, nothing external)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def html_image(path: Path, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img src='{data_uri(path)}' alt='{html.escape(alt)}'>{cap}</figure>"


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
