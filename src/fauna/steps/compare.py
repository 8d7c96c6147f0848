"""compare: every trained backbone side by side, one champion, one report.

Reads the train, evaluate and t-SNE outputs of each backbone (in any order, matched by
backbone name; see fauna.report.gather), decides the champion, never a model flagged
as degenerate (fauna.report.decision), and renders the report (fauna.report.render).
Output folder: report.md (+ images/), one self-contained report.html, report.json (the
data the report is rendered from, so publish can re-render it with its verdict) and
metrics.json for machines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fauna import logs, timing
from fauna.config import Config
from fauna.contracts import COMPARE_STEP, DATA_STEPS, REPORT_HTML, Comparison
from fauna.data.dataset import CLASSES, SOURCE, carry_forward, read_classes, write_json
from fauna.report.decision import machine_metrics, report_data, source_verdict
from fauna.report.gather import (
    CompareError,
    Inputs,
    backbone_row,
    data_summary,
    gather,
    load_predictions,
    per_class_f1,
    validation_score,
)
from fauna.report.render import render_report
from fauna.score.evaluation import read_source
from fauna.score.metrics import metric_spec
from fauna.score.policy import PREDICTIONS_DIR
from fauna.step_output import require_output, step_output

log = logging.getLogger(__name__)

STEP = COMPARE_STEP

__all__ = ["CompareError", "compare_backbones"]


def _classes(inputs: Inputs) -> list[str]:
    """The one class list all evaluations share (they must be of one dataset)."""
    found = {b: read_classes(d) for b, d in inputs.evals.items() if (d / CLASSES).is_file()}
    distinct = {tuple(c) for c in found.values()}
    if len(distinct) > 1:
        sizes = ", ".join(f"{b}: {len(c)}" for b, c in found.items())
        raise CompareError(
            f"the evaluations are of different datasets (classes per backbone: {sizes}): "
            "compare models of one dataset"
        )
    return list(distinct.pop()) if distinct else []


def _report_data(inputs: Inputs, out: Path, cfg: Config, data_dir: Path | None) -> dict[str, Any]:
    """Rows (images copied into out/images), per-class F1, the data and the decision."""
    images = out / "images"
    images.mkdir(parents=True)
    rows = [backbone_row(inputs, b, images) for b in inputs.order]
    per_class: dict[str, dict[str, float]] = {}
    support: dict[str, int] = {}
    for b in inputs.order:
        f1, counts = per_class_f1(inputs.evals[b])
        if f1:
            per_class[b] = f1
            support = support or counts
    classes = _classes(inputs) or list(support)
    dirs = [*([data_dir] if data_dir is not None else []), *inputs.evals.values()]
    dirs += list(inputs.models.values())
    source, synthetic = source_verdict([read_source(d) for d in dirs if (d / SOURCE).is_file()])
    predictions = {b: p for b in inputs.order if (p := load_predictions(inputs.evals[b]))}
    if predictions:  # publish pairs the run's champion with the dataset's on these
        (out / PREDICTIONS_DIR).mkdir()
        for b, p in predictions.items():
            p.save(out / PREDICTIONS_DIR / f"{b}.npz")
    metric = cfg.compare.champion_metric
    validation = {b: validation_score(inputs.models.get(b), metric) for b in inputs.order}
    return report_data(
        rows,
        classes,
        source,
        synthetic,
        cfg.compare,
        per_class,
        data_summary(data_dir, classes, support),
        predictions,
        validation,
    )


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
    if data_dir is not None:
        require_output(data_dir, DATA_STEPS, role="--data")
    inputs = gather(model_dirs, eval_dirs, tsne_dirs, cfg.train.backbones)
    with timing.phase("data_out"), step_output(Path(out), STEP) as tmp:
        data = _report_data(inputs, tmp, cfg, Path(data_dir) if data_dir else None)
        render_report(data, tmp, notes or [])
        machine = Comparison.from_json(machine_metrics(data)).to_json()
        write_json(tmp / Comparison.FILE, machine)
        carry_forward((CLASSES, SOURCE), inputs.evals.values(), tmp)
    champion = machine["champion"]
    if champion is None:
        log.warning("no champion: no model is eligible; report in %s", out)
    else:
        log.info(
            "champion by %s: %s (%.4f): %s; report in %s",
            metric_spec(champion["metric"]).label,
            champion["backbone"],
            champion["value"],
            champion["evidence"],
            Path(out) / REPORT_HTML,
        )
    return machine


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
    logs.result(result["champion"])  # null when every model is flagged
    return 0
