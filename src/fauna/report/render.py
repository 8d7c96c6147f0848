"""The report's data through Jinja2 templates: report.md, a self-contained report.html.

`report_view` turns the decided data (report.json) into what the page shows: the
sentences, and tables (fauna.report.tables, columns declared once); the templates in
`templates/` lay that out as Markdown (`report.md.j2`) and HTML (`report.html.j2`, images
inlined as data: URIs, one inline stylesheet, no scripts, no links). The t-SNE step's page
uses the same page template.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fauna.contracts import REPORT_HTML
from fauna.data.dataset import display_name, read_json, write_json
from fauna.paper import PAPER_TITLE
from fauna.report.extras import CURVE_KEYS
from fauna.report.tables import (
    confused_table,
    md_cell,
    paper_table,
    per_class_table,
    results_table,
    training_table,
)
from fauna.report.uncertainty import (
    baseline_line,
    interval,
    interval_note,
    metric_column,
    num_classes,
    trivial_top_k,
)
from fauna.score.metrics import METRIC_LABELS, metric_spec

TEMPLATES = Path(__file__).parent / "templates"
REPORT_DATA = "report.json"

SYNTHETIC_WARNING = (
    "These models were trained and tested on generated coloured patterns, not photos of "
    "animals. The numbers below prove the pipeline runs end to end; they say nothing about "
    "the backbones and cannot be compared with the paper."
)


# --------------------------------------------------------------------------- view


def _alerts(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The boxes at the top: synthetic data, flagged models (or no champion), notes."""
    alerts = []
    if data["synthetic"]:
        alerts.append({"kind": "warning", "title": "SYNTHETIC DATA.", "text": SYNTHETIC_WARNING})
    flagged = data.get("flagged") or {}
    items = [f"{b}: {reason}." for b, reason in flagged.items()]
    if flagged and data["champion"] is None:
        alerts.append(
            {
                "kind": "danger",
                "title": "NO CHAMPION.",
                "text": "Every model of this run is flagged as degenerate (it predicts (nearly) "
                "one class, or its features do not vary between images), so none may be "
                "champion:",
                "items": items,
            }
        )
    elif flagged:
        alerts.append(
            {
                "kind": "danger",
                "title": "Not eligible as champion.",
                "text": "These models are flagged as degenerate (whatever their scores, they "
                "learned nothing usable) and are never made champion:",
                "items": items,
            }
        )
    alerts += [{"kind": "note", "title": "Note:", "text": n} for n in data.get("notes", [])]
    return alerts


def _shown(value: float, metric: str) -> float:
    return -value if metric == "neg_loss" else value


def _champion_box(data: dict[str, Any]) -> dict[str, Any] | None:
    """The champion, by how much it leads the next eligible backbone, and how sure that is."""
    champ = data["champion"]
    if champ is None:
        return None
    metric, rows = champ["metric"], data["backbones"]
    label = METRIC_LABELS.get(metric, metric)
    key = metric_column(metric)
    flagged = data.get("flagged") or {}
    row = next(r for r in rows if r["backbone"] == champ["backbone"])
    ci = interval(row, key, data)
    shown = _shown(champ["value"], metric)
    headline = f"Champion: {champ['backbone']}, best by {label}: {shown:.4f}" + (
        f" ({ci['confidence']:.0%} interval {ci['low']:.4f}–{ci['high']:.4f})" if ci else ""
    )
    n = len(rows)
    headline += f" of {n} backbone{'s' if n != 1 else ''}" + (
        f" ({len(flagged)} flagged, not eligible)." if flagged else "."
    )
    details = []
    others = [
        r for r in rows if r["backbone"] != champ["backbone"] and r["backbone"] not in flagged
    ]
    others = [r for r in others if r.get(key) is not None]
    if others:
        lower = not metric_spec(key).higher_is_better
        runner = (min if lower else max)(others, key=lambda r: r[key])
        gap = (runner[key] - row[key]) if lower else (row[key] - runner[key])
        details.append(
            f"Ahead of {runner['backbone']} ({runner[key]:.4f}) by {gap:.4f} {label} on "
            f"{row.get('n_test') or 'the same'} test images."
        )
        details.append(champ.get("evidence") or _overlap(ci, interval(runner, key, data), label))
    else:
        details.append(champ.get("evidence") or "The only eligible backbone: nothing to rank.")
    return {"headline": headline, "details": [d for d in details if d]}


def _overlap(a: dict[str, float] | None, b: dict[str, float] | None, label: str) -> str:
    """Without the policy's paired test: what the two intervals say about the lead."""
    if a is None or b is None:
        return f"How sure that lead is was not measured (no interval of {label} here)."
    if a["low"] <= b["high"] and b["low"] <= a["high"]:
        return (
            f"Their {a['confidence']:.0%} intervals overlap: on this test split the lead may "
            "be chance."
        )
    return f"Their {a['confidence']:.0%} intervals do not overlap."


def _summary_line(data: dict[str, Any]) -> str:
    src, summary, dataset = data.get("source", {}), data.get("data") or {}, data["dataset"]
    images = ", ".join(f"{s} {n}" for s, n in summary.get("totals", {}).items())
    version = f" (version {src['version']})" if src.get("version") else ""
    return (
        f"Backbones: {', '.join(r['backbone'] for r in data['backbones'])}. "
        f"Data: {dataset['name']}{version}, {dataset['num_classes']} classes, images: {images}. "
        f"Generated {data['generated']}."
    )


def _results_notes(data: dict[str, Any]) -> list[str]:
    averaging = sorted({r["averaging_note"] for r in data["backbones"] if r.get("averaging_note")})
    explained = " ".join(a[:1].upper() + a[1:] + "." for a in averaging)
    ranked = "Best in bold" + (" (flagged models are not ranked)" if data.get("flagged") else "")
    ranked += ". " + interval_note(data)
    if trivial_top_k("top3", data):
        ranked += f" With {num_classes(data)} classes top-3 is 100% for any model: not ranked."
    ranked = ranked.removesuffix(".")
    if data["paper"] is not None:
        return [
            f"{ranked}. The paper's F1 is set against our macro-F1 (the paper does not say how "
            "it averaged; macro-F1 weighs every species equally, the honest choice on "
            "imbalanced classes). ROC-AUC is one-vs-rest, macro-averaged; the paper reported "
            f"none. {explained}"
        ]
    dataset = data["dataset"]
    if dataset.get("paper_classes"):  # the paper's classes, but generated data
        why = (
            "these models learned generated patterns named after the paper's 30 classes, "
            "not its photos, so its results are not set beside these."
        )
    else:
        why = (
            f"this dataset ({dataset['name']}, {dataset['num_classes']} classes) does not "
            "have the paper's 30 animal classes, so its results are not set beside these."
        )
    return [
        f"{ranked}. ROC-AUC is one-vs-rest, macro-averaged. {explained}",
        f"The paper's numbers do not apply here: {why}",
    ]


def _figures(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Learning curves (every backbone on one chart per metric when the rows carry their
    curves, each backbone's own plot folded below them), confusion matrices, t-SNE plots."""
    rows, groups = data["backbones"], []
    combined = [
        {
            "image": image,
            "caption": f"{k} per epoch, every backbone: train solid, validation dashed",
        }
        for k, image in (data.get("learning_curves") or {}).items()
    ]
    if combined:
        groups.append({"title": "Learning curves", "items": combined, "side_by_side": True})
    for key, title, caption in (
        ("history", "Learning curves", "training history per epoch, train vs validation"),
        ("confusion", "Confusion matrices", "rows normalised: each row sums to 1"),
        ("tsne", "t-SNE of the learned features", "penultimate-layer embeddings of test images"),
    ):
        items = []
        for r in rows:
            if key in r["images"]:
                items.append({"image": r["images"][key], "caption": f"{r['backbone']}: {caption}"})
            elif key == "tsne" and r.get("tsne_skipped"):
                items.append(
                    {
                        "text": f"{r['backbone']}: no t-SNE plot: {r['tsne_skipped']}; a "
                        "projection of such features would show numerical noise, not structure."
                    }
                )
        if items and key == "history" and combined:
            title = "Each backbone's own curves (loss, accuracy, AUC, macro-F1; fine-tuning marked)"
            groups.append({"title": title, "items": items, "folded": True})
        elif items:
            groups.append({"title": title, "items": items})
    return groups


def _misclassified(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per backbone, its thumbnails grouped by confused pair (true -> predicted)."""
    shown = []
    for r in rows:
        pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for m in r.get("misclassified") or []:
            pairs.setdefault((m["true"], m["predicted"]), []).append(
                {"image": m["file"], "caption": f"{100 * m['confidence']:.0f}% sure", "id": m["id"]}
            )
        if pairs:
            shown.append(
                {
                    "backbone": r["backbone"],
                    "pairs": [
                        {"title": f"{display_name(t)} → {display_name(p)}", "images": images}
                        for (t, p), images in pairs.items()
                    ],
                }
            )
    return shown


def report_view(data: dict[str, Any]) -> dict[str, Any]:
    """What the templates show, from the report data."""
    rows = data["backbones"]
    summary = data.get("data") or {}
    with_paper = data["paper"] is not None
    return {
        "title": f"{data['title']}: {data['dataset']['name']}",
        "summary": _summary_line(data),
        "alerts": _alerts(data),
        "champion": _champion_box(data),
        "results_title": "Test results beside the paper" if with_paper else "Test results",
        "baselines": baseline_line(data),
        "results": results_table(data),
        "results_notes": _results_notes(data),
        "paper_title": f"The paper's reported results ({PAPER_TITLE})" if with_paper else None,
        "paper": paper_table() if with_paper else None,
        "training": training_table(rows),
        "figures": _figures(data),
        "misclassified": _misclassified(rows),
        # The paper's error analysis is a comparison only where its classes and photos are.
        "paper_errors": with_paper,
        "confused": [
            {
                "backbone": r["backbone"],
                "table": confused_table(r["most_confused"]) if r.get("most_confused") else None,
            }
            for r in rows
        ],
        "per_class": per_class_table(data),
        "per_class_intro": (
            f"{summary.get('num_classes', len(data.get('classes', [])))} classes; images per "
            "split: "
            + ", ".join(f"{s} {n}" for s, n in summary.get("totals", {}).items())
            + ". Per backbone, precision (P: of the images it called this class, the share "
            "that were), recall (R: of this class's test images, the share it found) and F1 "
            "on the test split; the best F1 per class in bold."
        ),
    }


# ------------------------------------------------------------------------ render


@functools.cache
def environment() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=lambda name: bool(name) and ".html" in name,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=StrictUndefined,
    )
    env.filters["md_cell"] = md_cell
    return env


def render_report(data: dict[str, Any], out: Path, notes: Sequence[str] = ()) -> dict[str, Any]:
    """(Re)write report.md, report.html and report.json in `out` (which holds images/).

    `notes` are added near the top (e.g. the publish step's promotion verdict); a note
    already in the report is not repeated.
    """
    out = Path(out)
    data = {**data, "notes": list(data.get("notes", []))}
    for note in notes:
        if note not in data["notes"]:
            data["notes"].append(note)
    from fauna.plots import data_uri

    out.mkdir(parents=True, exist_ok=True)
    data["learning_curves"] = draw_learning_curves(data["backbones"], out / "images")
    view = report_view(data)
    env = environment()
    (out / "report.md").write_text(env.get_template("report.md.j2").render(view=view))
    html = env.get_template("report.html.j2").render(
        view=view, title=view["title"], inline=lambda rel: data_uri(out / rel)
    )
    (out / REPORT_HTML).write_text(html)
    write_json(out / REPORT_DATA, data)
    return data


def draw_learning_curves(rows: list[dict[str, Any]], images: Path) -> dict[str, str]:
    """One chart per metric with every backbone's curves (rows' `curves`): key -> image."""
    curves = {r["backbone"]: r["curves"] for r in rows if r.get("curves")}
    drawn: dict[str, str] = {}
    if not curves:
        return drawn
    from fauna.plots import plot_learning_curves

    for key in CURVE_KEYS:  # the history key is the chart's title
        if any(key in h or f"val_{key}" in h for c in curves.values() for h in c):
            name = f"learning-curves-{key}.png"
            plot_learning_curves(curves, key, key, images / name)
            drawn[key] = f"{images.name}/{name}"
    return drawn


def rerender_with_notes(report_dir: Path, out: Path, notes: Sequence[str]) -> dict[str, Any]:
    """A copy of a report folder in `out` (which must not exist), rendered with extra notes.

    The input folder is left as it was (publish writes its verdict into its own output).
    """
    from fauna.step_output import MARKER

    shutil.copytree(report_dir, out, ignore=shutil.ignore_patterns(MARKER))
    return render_report(read_json(Path(out) / REPORT_DATA), Path(out), notes)


def tsne_page(
    title: str, heading: str, image: Path | None, caption: str, synthetic: bool, skipped: str | None
) -> str:
    """The t-SNE step's self-contained page: the plot, or why there is none."""
    from fauna.plots import data_uri

    return (
        environment()
        .get_template("tsne.html.j2")
        .render(
            title=title,
            heading=heading,
            image=data_uri(image) if image is not None else None,
            caption=caption,
            synthetic=synthetic,
            skipped=skipped,
        )
    )
