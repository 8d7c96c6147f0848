"""The report's data through Jinja2 templates: report.md, a self-contained report.html.

`report_view` turns the decided data (report.json) into what the page shows: the
sentences, and tables whose columns are declared once (`Column`: header, value,
format, which value is best); the templates in `templates/` lay that out as Markdown
(`report.md.j2`) and HTML (`report.html.j2`, images inlined as data: URIs, one inline
stylesheet, no scripts, no links). The t-SNE step's page uses the same page template.
"""

from __future__ import annotations

import functools
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fauna.dataset import display_name, read_json, write_json
from fauna.metrics import METRIC_LABELS
from fauna.paper import PAPER_RESULTS, PAPER_TITLE

TEMPLATES = Path(__file__).parent / "templates"
REPORT_DATA = "report.json"

SYNTHETIC_WARNING = (
    "These models were trained and tested on generated coloured patterns, not photos of "
    "animals. The numbers below prove the pipeline runs end to end; they say nothing about "
    "the backbones and cannot be compared with the paper."
)


# ------------------------------------------------------------------------ tables


@dataclass
class Cell:
    text: str
    bold: bool = False
    kind: str = ""  # "": a number (right-aligned); "text": left-aligned; "ref": the paper's


@dataclass
class Table:
    headers: list[Cell]
    rows: list[list[Cell]]
    row_classes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Column:
    header: str
    value: Callable[[Any], Any]
    show: Callable[[Any], str] = str
    best: str = ""  # "max" or "min": that value is bold (among the rows that may be ranked)
    kind: str = ""


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{seconds:.1f}s"


def make_table(
    columns: Sequence[Column],
    items: Sequence[Any],
    ranked: Sequence[bool] | None = None,
    row_classes: Sequence[str] | None = None,
) -> Table:
    """One row per item; in each `best` column the best value among `ranked` rows is bold."""
    values = [[col.value(item) for col in columns] for item in items]
    ranked = list(ranked) if ranked is not None else [True] * len(items)
    bold: set[tuple[int, int]] = set()
    for c, col in enumerate(columns):
        candidates = [
            (r, row[c]) for r, row in enumerate(values) if ranked[r] and row[c] is not None
        ]
        if col.best and len(candidates) >= 2:
            best = (max if col.best == "max" else min)(v for _, v in candidates)
            bold |= {(r, c) for r, v in candidates if v == best}
    return Table(
        [Cell(col.header, kind="text" if col.kind == "text" else "") for col in columns],
        [
            [
                Cell(col.show(v), (r, c) in bold, col.kind)
                for c, (col, v) in enumerate(zip(columns, row, strict=True))
            ]
            for r, row in enumerate(values)
        ],
        list(row_classes) if row_classes is not None else [""] * len(items),
    )


def _ours(header: str, key: str, show: Callable[[Any], str], best: str = "") -> Column:
    return Column(header, lambda r: r[key], show, best)


def _paper(header: str, key: str, show: Callable[[Any], str]) -> Column:
    """The paper's number for the row's backbone, muted; "-" where the paper has none."""
    return Column(
        header,
        lambda r: (r.get("paper") or {}).get(key),
        lambda v: "-" if v is None else show(v),
        kind="ref",
    )


def results_table(rows: list[dict[str, Any]], with_paper: bool) -> Table:
    """Test metrics per backbone (the paper's beside them when they apply)."""
    flagged = Column(
        "backbone", lambda r: r["backbone"] + (" (flagged)" if r["degenerate"] else ""), kind="text"
    )
    columns = [flagged, _ours("top-1", "top1", pct, "max")]
    columns += [_paper("paper top-1", "top1", pct)] if with_paper else []
    columns += [_ours("top-3", "top3", pct, "max")]
    columns += [_paper("paper top-3", "top3", pct)] if with_paper else []
    columns += [_ours("macro-F1", "macro_f1", num, "max")]
    columns += [_paper("paper F1", "f1", num)] if with_paper else []
    columns += [
        _ours("weighted-F1", "weighted_f1", num, "max"),
        _ours("ROC-AUC", "roc_auc", num, "max"),
        _ours("loss", "loss", num, "min"),
        _ours("test images", "n_test", str),
    ]
    return make_table(
        columns,
        rows,
        ranked=[not r["degenerate"] for r in rows],
        row_classes=["flagged" if r["degenerate"] else "" for r in rows],
    )


def paper_table() -> Table:
    columns = [
        Column("model", lambda p: p.model, kind="text"),
        Column("setup", lambda p: p.setup, kind="text"),
        Column("top-1", lambda p: p.top1, pct),
        Column("top-3", lambda p: p.top3, pct),
        Column("F1", lambda p: p.f1, num),
    ]
    return make_table(columns, PAPER_RESULTS, row_classes=["paper"] * len(PAPER_RESULTS))


def training_table(rows: list[dict[str, Any]]) -> Table:
    columns = [
        Column("backbone", lambda r: r["backbone"], kind="text"),
        Column("weights", lambda r: r.get("weights") or "n/a"),
        Column("image size", lambda r: r.get("image_size"), lambda v: f"{v} px" if v else "n/a"),
        Column("epochs", lambda r: r.get("epochs_run"), lambda v: str(v or "n/a")),
        Column("training time", lambda r: r.get("train_seconds"), duration, "min"),
        Column(
            "images/s",
            lambda r: r.get("images_per_second"),
            lambda v: "n/a" if v is None else f"{v:.1f}",
            "max",
        ),
    ]
    return make_table(columns, rows)


def confused_table(pairs: list[dict[str, Any]]) -> Table:
    columns = [
        Column("true class", lambda p: display_name(p["true"]), kind="text"),
        Column("predicted as", lambda p: display_name(p["predicted"]), kind="text"),
        Column("images", lambda p: p["count"]),
        Column("share", lambda p: p["rate"], pct),
    ]
    return make_table(columns, pairs)


def per_class_table(data: dict[str, Any]) -> Table | None:
    """Images per class and split, and each backbone's F1 per class (the best bold)."""
    per_class = data.get("per_class_f1") or {}
    summary = data.get("data") or {}
    with_f1 = [r["backbone"] for r in data["backbones"] if r["backbone"] in per_class]
    if not per_class or not data.get("classes"):
        return None
    splits, counts = summary.get("splits", []), summary.get("counts", {})
    headers = [Cell("class", kind="text")] + [Cell(f"{s} images") for s in splits]
    headers += [Cell(f"F1 {b}") for b in with_f1]
    rows = []
    for c in data["classes"]:
        scores = [per_class[b].get(c) for b in with_f1]
        present = [v for v in scores if v is not None]
        best = max(present) if len(present) >= 2 and max(present) > 0 else None
        rows.append(
            [Cell(display_name(c), kind="text")]
            + [Cell(str(counts.get(c, {}).get(s, 0))) for s in splits]
            + [Cell(num(v), v is not None and v == best) for v in scores]
        )
    return Table(headers, rows, [""] * len(rows))


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


def _champion_line(data: dict[str, Any]) -> str | None:
    champ = data["champion"]
    if champ is None:
        return None
    metric = champ["metric"]
    shown = -champ["value"] if metric == "neg_loss" else champ["value"]
    n = len(data["backbones"])
    flagged = len(data.get("flagged") or {})
    return (
        f"Champion: {champ['backbone']}, best by {METRIC_LABELS.get(metric, metric)}: "
        f"{shown:.4f} (of {n} backbone{'s' if n != 1 else ''}"
        + (f"; {flagged} flagged, not eligible" if flagged else "")
        + ")."
    )


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


def _figures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups = []
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
        if items:
            groups.append({"title": title, "items": items})
    return groups


def report_view(data: dict[str, Any]) -> dict[str, Any]:
    """What the templates show, from the report data."""
    rows = data["backbones"]
    summary = data.get("data") or {}
    with_paper = data["paper"] is not None
    return {
        "title": f"{data['title']}: {data['dataset']['name']}",
        "summary": _summary_line(data),
        "alerts": _alerts(data),
        "champion": _champion_line(data),
        "results_title": "Test results beside the paper" if with_paper else "Test results",
        "results": results_table(rows, with_paper),
        "results_notes": _results_notes(data),
        "paper_title": f"The paper's reported results ({PAPER_TITLE})" if with_paper else None,
        "paper": paper_table() if with_paper else None,
        "training": training_table(rows),
        "figures": _figures(rows),
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
            + ". F1 per class on the test split; the best backbone per class in bold."
        ),
    }


# ------------------------------------------------------------------------ render


def md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    return f"**{text}**" if cell.bold and text else text


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

    view = report_view(data)
    env = environment()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(env.get_template("report.md.j2").render(view=view))
    html = env.get_template("report.html.j2").render(
        view=view, title=view["title"], inline=lambda rel: data_uri(out / rel)
    )
    (out / "report.html").write_text(html)
    write_json(out / REPORT_DATA, data)
    return data


def rerender_with_notes(report_dir: Path, out: Path, notes: Sequence[str]) -> dict[str, Any]:
    """A copy of a report folder in `out` (which must not exist), rendered with extra notes.

    The input folder is left as it was (publish writes its verdict into its own output).
    """
    from fauna.outputs import MARKER

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
