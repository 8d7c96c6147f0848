"""The comparison report: every trained backbone side by side, and beside the paper.

Inputs are the train, evaluate and t-SNE outputs of each backbone, in any order
(KFP's `dsl.Collected` gives no order guarantee): they are matched by the
backbone name each one records. Output: report.md (+ images/), one
self-contained report.html (images inlined), report.json (the data the report is
rendered from, so a later step can re-render it with extra notes) and
metrics.json for machines.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fauna.config import Config
from fauna.dataset import (
    CLASSES,
    MANIFEST,
    SOURCE,
    carry_forward,
    display_name,
    read_json,
    read_manifest,
    write_json,
)
from fauna.errors import FaunaError
from fauna.paper import PAPER_RESULTS, PAPER_TITLE, paper_reference, paper_results_dict
from fauna.plots import html_image, html_page, plot_history
from fauna.steps.evaluate import METRICS, model_info, read_source

log = logging.getLogger(__name__)

REPORT_DATA = "report.json"
SCALARS = ("top1", "top3", "macro_f1", "weighted_f1", "roc_auc", "loss")
METRIC_LABELS = {
    "top1": "top-1 accuracy",
    "top3": "top-3 accuracy",
    "macro_f1": "macro-F1",
    "weighted_f1": "weighted-F1",
    "roc_auc": "ROC-AUC",
    "neg_loss": "lowest test loss",
    "loss": "test loss",
}
SYNTHETIC_WARNING = (
    "SYNTHETIC DATA. These models were trained and tested on generated coloured patterns, "
    "not photos of animals. The numbers below prove the pipeline runs end to end; they say "
    "nothing about the backbones and cannot be compared with the paper."
)


class CompareError(FaunaError):
    """The inputs of the comparison do not fit together."""


# ---------------------------------------------------------------- gathering the inputs


def _index(dirs: Sequence[Path], kind: str, name_of: Any) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in map(Path, dirs):
        name = str(name_of(d))
        if name in found:
            raise CompareError(f"two {kind} outputs for backbone {name!r}: {found[name]} and {d}")
        found[name] = d
    return found


def _json_backbone(filename: str) -> Any:
    def name_of(d: Path) -> str:
        path = d / filename
        if not path.is_file():
            raise CompareError(f"no {filename} in {d}: is this the right step output?")
        return json.loads(path.read_text())["backbone"]

    return name_of


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{seconds:.1f}s"


def champion_value(metrics: dict[str, Any], metric: str) -> float | None:
    """Higher is better for every champion metric; `neg_loss` is minus the test loss."""
    if metric == "neg_loss":
        return None if metrics.get("loss") is None else -float(metrics["loss"])
    value = metrics.get(metric)
    return None if value is None else float(value)


def _data_summary(data_dir: Path | None, classes: list[str], test_support: dict[str, int]) -> dict:
    """Images per class and split: the manifest when the data folder is given, else test only."""
    counts: dict[str, dict[str, int]] = {c: {"test": test_support.get(c, 0)} for c in classes}
    splits = ["test"]
    if data_dir is not None and (Path(data_dir) / MANIFEST).is_file():
        manifest = read_manifest(Path(data_dir) / MANIFEST)
        tally = Counter((row.get("split", ""), row.get("label", "")) for row in manifest)
        present = {s for s, _ in tally}
        splits = [s for s in ("train", "val", "test") if s in present] or splits
        counts = {c: {s: tally.get((s, c), 0) for s in splits} for c in classes}
    totals = {s: sum(counts[c].get(s, 0) for c in classes) for s in splits}
    return {"num_classes": len(classes), "splits": splits, "counts": counts, "totals": totals}


def compare_backbones(
    model_dirs: list[Path],
    eval_dirs: list[Path],
    tsne_dirs: list[Path],
    out: Path,
    cfg: Config,
    data_dir: Path | None = None,
    notes: list[str] | None = None,
) -> dict:
    """Write the comparison report into `out`; returns the machine-readable metrics."""
    out = Path(out)
    evals = _index(eval_dirs, "evaluate", _json_backbone(METRICS))
    if not evals:
        raise CompareError("nothing to compare: no evaluation outputs given")
    models = _index(model_dirs, "train", lambda d: model_info(d)["backbone"])
    tsnes = _index(tsne_dirs, "t-SNE", _json_backbone("tsne.json"))
    for kind, found in (("train", models), ("t-SNE", tsnes)):
        extra = sorted(set(found) - set(evals))
        if extra:
            raise CompareError(f"{kind} outputs without an evaluation: {', '.join(extra)}")
    order = [b for b in cfg.train.backbones if b in evals] + sorted(
        b for b in evals if b not in cfg.train.backbones
    )

    # Synthetic if any input says so, or if none says anything (real data must be proven).
    dirs = [*([Path(data_dir)] if data_dir is not None else []), *evals.values(), *models.values()]
    sources = [read_source(d) for d in dirs if (d / SOURCE).is_file()] or [read_source()]
    synthetic = any(bool(s.get("synthetic", True)) for s in sources)
    source = sources[0]

    images = out / "images"
    if images.exists():
        shutil.rmtree(images)
    images.mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    per_class: dict[str, dict[str, float]] = {}
    support: dict[str, int] = {}
    classes: list[str] = []
    for bb in order:
        ev = evals[bb]
        m = read_json(ev / METRICS)
        info = model_info(models[bb]) if bb in models else {}
        row: dict[str, Any] = {
            "backbone": bb,
            **{k: m.get(k) for k in SCALARS},
            "n_test": m.get("n_test"),
            "averaging_note": m.get("averaging_note", ""),
            "most_confused": m.get("most_confused", []),
            "weights": info.get("weights", m.get("weights")),
            "image_size": info.get("image_size", m.get("image_size")),
            "epochs_run": info.get("epochs_run"),
            "train_seconds": info.get("train_seconds"),
            "images_per_second": info.get("images_per_second"),
            "images": {},
        }
        ref = paper_reference(bb)
        row["paper"] = None if ref is None else {"model": ref.model, **_paper_numbers(ref)}
        if (ev / "confusion_matrix.png").is_file():
            shutil.copyfile(ev / "confusion_matrix.png", images / f"{bb}-confusion.png")
            row["images"]["confusion"] = f"images/{bb}-confusion.png"
        if bb in models:
            hist_png, hist_json = models[bb] / "history.png", models[bb] / "history.json"
            if hist_png.is_file():
                shutil.copyfile(hist_png, images / f"{bb}-history.png")
                row["images"]["history"] = f"images/{bb}-history.png"
            elif hist_json.is_file():
                plot_history(read_json(hist_json), images / f"{bb}-history.png", bb)
                row["images"]["history"] = f"images/{bb}-history.png"
        if bb in tsnes and (tsnes[bb] / "tsne.png").is_file():
            shutil.copyfile(tsnes[bb] / "tsne.png", images / f"{bb}-tsne.png")
            row["images"]["tsne"] = f"images/{bb}-tsne.png"
        per_class_csv = ev / "per_class.csv"
        if per_class_csv.is_file():
            with per_class_csv.open(newline="") as fh:
                entries = list(csv.DictReader(fh))
            per_class[bb] = {e["class"]: float(e["f1"]) for e in entries}
            for e in entries:
                support.setdefault(e["class"], int(e["support"]))
            classes = classes or [e["class"] for e in entries]
        rows.append(row)
    if (evals[order[0]] / CLASSES).is_file():
        classes = json.loads((evals[order[0]] / CLASSES).read_text())

    metric = cfg.compare.champion_metric
    scored = [(champion_value(r, metric), r["backbone"]) for r in rows]
    scored = [(v, b) for v, b in scored if v is not None]
    if not scored:
        raise CompareError(f"no backbone has a value for the champion metric {metric!r}")
    best_value, best = max(scored, key=lambda vb: vb[0])  # first listed wins a tie
    champion = {"backbone": best, "metric": metric, "value": best_value}

    data = {
        "title": "fauna: backbone comparison",
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "synthetic": synthetic,
        "source": source,
        "champion": champion,
        "backbones": rows,
        "classes": classes,
        "per_class_f1": per_class,
        "data": _data_summary(data_dir, classes, support),
        "paper": paper_results_dict(),
        "notes": [],
    }
    render_report(data, out, notes)
    machine = {
        "champion": champion,
        "backbones": {
            r["backbone"]: {
                **{k: r[k] for k in SCALARS},
                "n_test": r["n_test"],
                "train_seconds": r["train_seconds"],
                "images_per_second": r["images_per_second"],
                "epochs_run": r["epochs_run"],
            }
            for r in rows
        },
        "synthetic": synthetic,
        "paper": paper_results_dict(),
    }
    write_json(out / METRICS, machine)
    carry_forward((CLASSES, SOURCE), evals.values(), out)
    log.info(f"champion by {metric}: {best} ({best_value:.4f}); report in {out / 'report.html'}")
    return machine


def _paper_numbers(ref: Any) -> dict[str, float]:
    return {"top1": ref.top1, "top3": ref.top3, "f1": ref.f1}


# ---------------------------------------------------------------- rendering


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells
    row_class: dict[int, str] = field(default_factory=dict)
    left: int = 1  # leading text columns, left-aligned
    reference: set[int] = field(default_factory=set)  # columns shown muted (the paper's)

    def md(self) -> str:
        def cell(r: int, c: int, text: str) -> str:
            text = text.replace("|", "\\|")
            return f"**{text}**" if (r, c) in self.bold and text else text

        lines = [
            "| " + " | ".join(self.headers) + " |",
            "|" + "|".join(["---"] * self.left + ["---:"] * (len(self.headers) - self.left)) + "|",
        ]
        for r, row in enumerate(self.rows):
            lines.append("| " + " | ".join(cell(r, c, t) for c, t in enumerate(row)) + " |")
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(
            f"<th class='text'>{html.escape(h)}</th>"
            if c < self.left
            else f"<th>{html.escape(h)}</th>"
            for c, h in enumerate(self.headers)
        )
        body = []
        for r, row in enumerate(self.rows):
            cells = []
            for c, text in enumerate(row):
                t = f"<b>{html.escape(text)}</b>" if (r, c) in self.bold else html.escape(text)
                cls = "text" if c < self.left else "ref" if c in self.reference else ""
                cells.append(f"<td class='{cls}'>{t}</td>" if cls else f"<td>{t}</td>")
            cls = f" class='{self.row_class[r]}'" if r in self.row_class else ""
            body.append(f"<tr{cls}>{''.join(cells)}</tr>")
        return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}%"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _best_cells(rows: list[list[float | None]], columns: dict[int, bool]) -> set[tuple[int, int]]:
    """(row, col) of the best value in each column; columns maps col -> higher is better."""
    bold = set()
    for c, higher in columns.items():
        values = [(r, row[c]) for r, row in enumerate(rows) if row[c] is not None]
        if len(values) < 2:
            continue
        best = (max if higher else min)(v for _, v in values)
        bold |= {(r, c) for r, v in values if v == best}
    return bold


def _sections(data: dict[str, Any]) -> list[tuple]:
    """The report as a list of blocks, rendered the same way to Markdown and HTML."""
    rows = data["backbones"]
    champ = data["champion"]
    names = ", ".join(r["backbone"] for r in rows)
    src = data.get("source", {})
    summary = data.get("data") or {}
    blocks: list[tuple] = [("h1", data["title"])]
    blocks.append(
        (
            "muted",
            f"Backbones: {names}. Data: {src.get('name') or src.get('source', 'unknown')}"
            + (f" (version {src['version']})" if src.get("version") else "")
            + f", {summary.get('num_classes', len(data.get('classes', [])))} classes, images: "
            + ", ".join(f"{s} {n}" for s, n in summary.get("totals", {}).items())
            + f". Generated {data['generated']}.",
        )
    )
    if data["synthetic"]:
        blocks.append(("warning", SYNTHETIC_WARNING))
    for note in data.get("notes", []):
        blocks.append(("note", note))
    metric = champ["metric"]
    shown = -champ["value"] if metric == "neg_loss" else champ["value"]
    blocks.append(
        (
            "champion",
            f"Champion: {champ['backbone']}, best by {METRIC_LABELS.get(metric, metric)}: "
            f"{shown:.4f} (of {len(rows)} backbone{'s' if len(rows) != 1 else ''}).",
        )
    )

    # Results beside the paper.
    blocks.append(("h2", "Test results beside the paper"))
    values = [[r.get(k) for k in SCALARS] for r in rows]
    column_of = {0: 1, 1: 3, 2: 5, 3: 7, 4: 8, 5: 9}  # SCALARS index -> table column
    higher = {i: key != "loss" for i, key in enumerate(SCALARS)}
    bold = {(r, column_of[c]) for r, c in _best_cells(values, higher)}
    table_rows = []
    for r in rows:
        p = r["paper"] or {}
        table_rows.append(
            [
                r["backbone"],
                _pct(r["top1"]),
                _pct(p.get("top1")) if p else "-",
                _pct(r["top3"]),
                _pct(p.get("top3")) if p else "-",
                _num(r["macro_f1"]),
                _num(p.get("f1")) if p else "-",
                _num(r["weighted_f1"]),
                _num(r["roc_auc"]),
                _num(r["loss"]),
                str(r["n_test"]),
            ]
        )
    blocks.append(
        (
            "table",
            Table(
                [
                    "backbone",
                    "top-1",
                    "paper top-1",
                    "top-3",
                    "paper top-3",
                    "macro-F1",
                    "paper F1",
                    "weighted-F1",
                    "ROC-AUC",
                    "loss",
                    "test images",
                ],
                table_rows,
                bold,
                reference={2, 4, 6},
            ),
        )
    )
    averaging = sorted({r["averaging_note"] for r in rows if r.get("averaging_note")})
    blocks.append(
        (
            "p",
            "Best of ours in bold. The paper's F1 is set against our macro-F1 (the paper does not "
            "say how it averaged; macro-F1 weighs every species equally, the honest choice on "
            "imbalanced classes). ROC-AUC is one-vs-rest, macro-averaged; the paper reported none. "
            + " ".join(a[:1].upper() + a[1:] + "." for a in averaging),
        )
    )
    blocks.append(("h3", f"The paper's reported results ({PAPER_TITLE})"))
    blocks.append(
        (
            "table",
            Table(
                ["model", "setup", "top-1", "top-3", "F1"],
                [[p.model, p.setup, _pct(p.top1), _pct(p.top3), _num(p.f1)] for p in PAPER_RESULTS],
                row_class={i: "paper" for i in range(len(PAPER_RESULTS))},
                left=2,
            ),
        )
    )
    blocks.append(
        ("p", "VGG16 v1 (64x64 Kaggle weights, no augmentation) is shown as context only.")
    )

    # Training cost.
    blocks.append(("h2", "Training"))
    speed = [[r.get("train_seconds"), r.get("images_per_second")] for r in rows]
    blocks.append(
        (
            "table",
            Table(
                ["backbone", "weights", "image size", "epochs", "training time", "images/s"],
                [
                    [
                        r["backbone"],
                        str(r.get("weights") or "n/a"),
                        f"{r['image_size']} px" if r.get("image_size") else "n/a",
                        str(r.get("epochs_run") or "n/a"),
                        _fmt_seconds(r.get("train_seconds")),
                        "n/a"
                        if r.get("images_per_second") is None
                        else f"{r['images_per_second']:.1f}",
                    ]
                    for r in rows
                ],
                {(r, c + 4) for r, c in _best_cells(speed, {0: False, 1: True})},
            ),
        )
    )

    for key, title, caption in (
        ("history", "Learning curves", "training history per epoch, train vs validation"),
        ("confusion", "Confusion matrices", "rows normalised: each row sums to 1"),
        ("tsne", "t-SNE of the learned features", "penultimate-layer embeddings of test images"),
    ):
        have = [r for r in rows if key in r["images"]]
        if not have:
            continue
        blocks.append(("h2", title))
        for r in have:
            blocks.append(("img", r["images"][key], f"{r['backbone']}: {caption}"))

    blocks.append(("h2", "Most-confused class pairs"))
    blocks.append(
        (
            "p",
            "Directed: how many test images of the true class were predicted as the other "
            "class, and what share of the true class that is. The paper found most errors "
            "between species that look alike.",
        )
    )
    columns = []
    for r in rows:
        pairs = r.get("most_confused") or []
        column: list[tuple] = [("h3", r["backbone"])]
        if not pairs:
            column.append(("p", "No confusions: every test image was classified correctly."))
        else:
            column.append(
                (
                    "table",
                    Table(
                        ["true class", "predicted as", "images", "share"],
                        [
                            [
                                display_name(p["true"]),
                                display_name(p["predicted"]),
                                str(p["count"]),
                                _pct(p["rate"]),
                            ]
                            for p in pairs
                        ],
                        left=2,
                    ),
                )
            )
        columns.append(column)
    blocks.append(("columns", columns))

    per_class = data.get("per_class_f1") or {}
    if per_class and data.get("classes"):
        splits = summary.get("splits", [])
        counts = summary.get("counts", {})
        with_f1 = [r["backbone"] for r in rows if r["backbone"] in per_class]
        blocks.append(("h2", "Per-class F1 and data"))
        blocks.append(
            (
                "p",
                f"{summary.get('num_classes', len(data['classes']))} classes; images per split: "
                + ", ".join(f"{s} {summary['totals'][s]}" for s in splits)
                + ". F1 per class on the test split; the best backbone per class in bold.",
            )
        )
        f1_rows = [[per_class[b].get(c) for b in with_f1] for c in data["classes"]]
        offset = 1 + len(splits)
        bold = set()
        for r, row in enumerate(f1_rows):
            present = [v for v in row if v is not None]
            if len(present) >= 2 and max(present) > 0:
                bold |= {(r, offset + c) for c, v in enumerate(row) if v == max(present)}
        blocks.append(
            (
                "table",
                Table(
                    ["class"] + [f"{s} images" for s in splits] + [f"F1 {b}" for b in with_f1],
                    [
                        [display_name(c)]
                        + [str(counts.get(c, {}).get(s, 0)) for s in splits]
                        + [_num(v) for v in row]
                        for c, row in zip(data["classes"], f1_rows, strict=True)
                    ],
                    bold,
                ),
            )
        )
    blocks.append(
        (
            "muted",
            "metrics.json beside this report holds these numbers for machines; report.json "
            "holds everything this page is rendered from.",
        )
    )
    return blocks


def _render_md(blocks: list[tuple]) -> str:
    parts = []
    for kind, *args in blocks:
        if kind == "columns":  # side by side in HTML, one after another here
            parts.extend(_render_md(column).rstrip("\n") for column in args[0])
        elif kind == "h1":
            parts.append(f"# {args[0]}")
        elif kind == "h2":
            parts.append(f"## {args[0]}")
        elif kind == "h3":
            parts.append(f"### {args[0]}")
        elif kind == "warning":
            parts.append(f"> **WARNING: {args[0]}**")
        elif kind == "note":
            parts.append(f"> **Note:** {args[0]}")
        elif kind == "champion":
            parts.append(f"**{args[0]}**")
        elif kind in ("p", "muted"):
            parts.append(f"*{args[0]}*" if kind == "muted" else args[0])
        elif kind == "table":
            parts.append(args[0].md())
        elif kind == "img":
            parts.append(f"![{args[1]}]({args[0]})\n\n*{args[1]}*")
    return "\n\n".join(parts) + "\n"


def _render_html(blocks: list[tuple], out: Path) -> str:
    parts = []
    for kind, *args in blocks:
        if kind == "columns":
            inner = "".join(f"<div>{_render_html(column, out)}</div>" for column in args[0])
            parts.append(f"<div class='columns'>{inner}</div>")
        elif kind in ("h1", "h2", "h3"):
            parts.append(f"<{kind}>{html.escape(args[0])}</{kind}>")
        elif kind in ("warning", "note", "champion", "muted"):
            parts.append(f"<p class='{kind}'>{html.escape(args[0])}</p>")
        elif kind == "p":
            parts.append(f"<p>{html.escape(args[0])}</p>")
        elif kind == "table":
            parts.append(args[0].html())
        elif kind == "img":
            parts.append(html_image(out / args[0], args[1], args[1]))
    return "\n".join(parts)


def render_report(data: dict[str, Any], out: Path, notes: list[str] | None = None) -> dict:
    """(Re)write report.md, report.html and report.json from the report data.

    `notes` are added near the top (e.g. the publish step's promotion verdict);
    a note already in the report is not repeated.
    """
    out = Path(out)
    data = {**data, "notes": list(data.get("notes", []))}
    for note in notes or []:
        if note not in data["notes"]:
            data["notes"].append(note)
    blocks = _sections(data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(_render_md(blocks))
    (out / "report.html").write_text(html_page(data["title"], _render_html(blocks, out)))
    write_json(out / REPORT_DATA, data)
    return data


def add_report_notes(report_dir: Path, notes: list[str]) -> dict:
    """Re-render an existing report with extra notes (the publish step's hook)."""
    return render_report(read_json(Path(report_dir) / REPORT_DATA), Path(report_dir), notes)


# ---------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument("--models", nargs="+", required=True, help="train step output folders")
    parser.add_argument(
        "--evaluations", nargs="+", required=True, help="evaluate step output folders"
    )
    parser.add_argument("--tsnes", nargs="*", default=[], help="t-SNE step output folders")
    parser.add_argument("--data", help="dataset folder, for images per class and split")
    parser.add_argument("--out", required=True, help="folder for report.md/html, metrics.json")
    parser.add_argument(
        "--note", action="append", default=[], help="a line to show near the top (repeatable)"
    )


def run(args: Any, cfg: Config) -> int:
    result = compare_backbones(
        [Path(p) for p in args.models],
        [Path(p) for p in args.evaluations],
        [Path(p) for p in args.tsnes],
        Path(args.out),
        cfg,
        data_dir=Path(args.data) if args.data else None,
        notes=args.note,
    )
    print(json.dumps(result["champion"]))
    return 0
