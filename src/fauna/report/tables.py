"""The report's tables: columns declared once (`Column`: header, value, format, which value
is best, the small note after a value), laid out as Markdown or HTML by the templates.

`results_table` has a column per metric of the metric spec (fauna.score.metrics: its
header, direction, format; a new metric there is a new column here), each score with its
interval (fauna.report.uncertainty), no trivial top-k ranked, and the paper's numbers
beside the metrics it reported (fauna.paper.PAPER_METRICS); `per_class_table` shows
precision, recall and F1 per class and backbone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fauna.data.dataset import display_name
from fauna.paper import PAPER_METRICS, PAPER_RESULTS
from fauna.report.uncertainty import interval, trivial_top_k
from fauna.score import metrics
from fauna.score.metrics import MetricSpec


@dataclass
class Cell:
    text: str
    bold: bool = False
    kind: str = ""  # "": a number (right-aligned); "text": left-aligned; "ref": the paper's
    note: str = ""  # shown small after the text: a score's interval


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
    note: Callable[[Any], str] | None = None  # per item: the small text after its value


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
                Cell(col.show(v), (r, c) in bold, col.kind, col.note(items[r]) if col.note else "")
                for c, (col, v) in enumerate(zip(columns, row, strict=True))
            ]
            for r, row in enumerate(values)
        ],
        list(row_classes) if row_classes is not None else [""] * len(items),
    )


def _ours(
    header: str,
    key: str,
    show: Callable[[Any], str],
    best: str = "",
    data: dict | None = None,
    percent: bool = False,
) -> Column:
    """Our score per row; with `data`, its interval after it (where one is known), in
    percent for a share of the test images."""

    def note(row: dict[str, Any]) -> str:
        ci = interval(row, key, data) if data is not None else None
        if ci is None:
            return ""
        if percent:
            return f"{100 * ci['low']:.1f}–{100 * ci['high']:.1f}%"
        return f"{ci['low']:.3f}–{ci['high']:.3f}"

    return Column(header, lambda r: r.get(key), show, best, note=note)


def _paper(header: str, key: str, show: Callable[[Any], str]) -> Column:
    """The paper's number for the row's backbone, muted; "-" where the paper has none."""
    return Column(
        header,
        lambda r: (r.get("paper") or {}).get(key),
        lambda v: "-" if v is None else show(v),
        kind="ref",
    )


def shown(spec: MetricSpec) -> Callable[[float | None], str]:
    """How the report writes a metric's value: a share of the test images (top-k) in
    percent, any other by the spec's format."""
    return pct if spec.top_k else spec.format


def _metric_columns(spec: MetricSpec, data: dict[str, Any], with_paper: bool) -> list[Column]:
    """A metric's column (best by its direction, unranked where trivial) and, where the
    paper reported it, the paper's number beside it."""
    direction = "max" if spec.higher_is_better else "min"
    best = "" if trivial_top_k(spec.key, data) else direction
    show = shown(spec)
    columns = [_ours(spec.header, spec.key, show, best, data, percent=bool(spec.top_k))]
    if with_paper and spec.key in PAPER_METRICS:
        field_name, name = PAPER_METRICS[spec.key]
        columns.append(_paper(f"paper {name}", field_name, show))
    return columns


def results_table(data: dict[str, Any]) -> Table:
    """Test metrics per backbone, one column per metric of the spec (fauna.score.metrics,
    in its order), with their intervals (the paper's beside them when they apply); top-k
    is not ranked where it is trivial (k >= classes)."""
    rows, with_paper = data["backbones"], data["paper"] is not None
    flagged = Column(
        "backbone", lambda r: r["backbone"] + (" (flagged)" if r["degenerate"] else ""), kind="text"
    )
    columns = [flagged]
    for spec in metrics.SPECS:
        columns += _metric_columns(spec, data, with_paper)
    columns.append(_ours("test images", "n_test", lambda v: "n/a" if v is None else str(v)))
    return make_table(
        columns,
        rows,
        ranked=[not r["degenerate"] for r in rows],
        row_classes=["flagged" if r["degenerate"] else "" for r in rows],
    )


def paper_table() -> Table:
    """The paper's results: its models and setups, and the metrics it reported."""
    columns = [
        Column("model", lambda p: p.model, kind="text"),
        Column("setup", lambda p: p.setup, kind="text"),
    ]
    for spec in metrics.SPECS:
        if spec.key in PAPER_METRICS:
            field_name, name = PAPER_METRICS[spec.key]
            columns.append(Column(name, lambda p, f=field_name: getattr(p, f), shown(spec)))
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
    """Images per class and split, and each backbone's precision, recall and F1 per class
    (F1 only from a report made before evaluate kept the others); the best F1 bold."""
    rows = data["backbones"]
    scores = {r["backbone"]: r["per_class"] for r in rows if r.get("per_class")}
    for b, f1 in (data.get("per_class_f1") or {}).items():
        scores.setdefault(b, {c: {"f1": v} for c, v in f1.items()})
    with_scores = [r["backbone"] for r in rows if r["backbone"] in scores]
    if not scores or not data.get("classes"):
        return None
    summary = data.get("data") or {}
    splits, counts = summary.get("splits", []), summary.get("counts", {})
    parts = {b: [k for k in ("precision", "recall") if _has(scores[b], k)] for b in with_scores}
    headers = [Cell("class", kind="text")] + [Cell(f"{s} images") for s in splits]
    for b in with_scores:
        headers += [Cell(f"{b} {PER_CLASS_SHORT[k]}") for k in (*parts[b], "f1")]
    table = []
    for c in data["classes"]:
        f1s = [scores[b].get(c, {}).get("f1") for b in with_scores]
        present = [v for v in f1s if v is not None]
        best = max(present) if len(present) >= 2 and max(present) > 0 else None
        cells = [Cell(display_name(c), kind="text")]
        cells += [Cell(str(counts.get(c, {}).get(s, 0))) for s in splits]
        for b, f1 in zip(with_scores, f1s, strict=True):
            cells += [Cell(num(scores[b].get(c, {}).get(k))) for k in parts[b]]
            cells.append(Cell(num(f1), f1 is not None and f1 == best))
        table.append(cells)
    return Table(headers, table, [""] * len(table))


PER_CLASS_SHORT = {"precision": "P", "recall": "R", "f1": "F1"}


def _has(per_class: dict[str, dict[str, float]], key: str) -> bool:
    return any(key in v for v in per_class.values())


def md_cell(cell: Cell) -> str:
    text = cell.text.replace("|", "\\|")
    text = f"**{text}**" if cell.bold and text else text
    return f"{text} [{cell.note}]" if cell.note else text
