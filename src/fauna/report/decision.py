"""What the comparison decides: the champion (never a flagged model), the dataset, the paper.

`report_data` assembles everything the report is rendered from (saved as report.json,
so a later step can re-render it with notes); `machine_metrics` is the part machines
read (metrics.json): the champion, the dataset it belongs to, each backbone's scalars.
"""

from __future__ import annotations

import time
from typing import Any

from fauna.champion import DatasetId
from fauna.metrics import METRIC_KEYS, champion_value
from fauna.paper import paper_applies, paper_results_dict
from fauna.report.gather import CompareError

TITLE = "fauna: backbone comparison"


def choose_champion(
    rows: list[dict[str, Any]], metric: str
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The best unflagged backbone by `metric` (the first listed wins a tie), and the flagged.

    None when every backbone with a value is flagged as degenerate: then there is no champion.
    """
    flagged = {
        r["backbone"]: r.get("degenerate_reason") or "flagged as degenerate"
        for r in rows
        if r.get("degenerate")
    }
    scored = [(champion_value(r, metric), r["backbone"]) for r in rows]
    if all(v is None for v, _ in scored):
        raise CompareError(f"no backbone has a value for the champion metric {metric!r}")
    eligible = [(v, b) for v, b in scored if v is not None and b not in flagged]
    if not eligible:
        return None, flagged
    best_value, best = max(eligible, key=lambda vb: vb[0])
    return {"backbone": best, "metric": metric, "value": best_value}, flagged


def source_verdict(sources: list[dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """The first source, and whether the data is synthetic.

    Synthetic if any input says so, or if none says anything (real data must be proven).
    """
    if not sources:
        return {"source": "unknown", "synthetic": True}, True
    return sources[0], any(bool(s.get("synthetic", True)) for s in sources)


def report_data(
    rows: list[dict[str, Any]],
    classes: list[str],
    source: dict[str, Any],
    synthetic: bool,
    metric: str,
    per_class: dict[str, dict[str, float]],
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Everything the report shows, decided: champion, flags, dataset, the paper or not."""
    champion, flagged = choose_champion(rows, metric)
    applies = paper_applies(classes)
    dataset = DatasetId.of(source, classes)
    return {
        "title": TITLE,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "synthetic": synthetic,
        "source": source,
        "dataset": {**dataset.to_dict(), "paper_classes": applies},
        "metric": metric,
        "champion": champion,
        "flagged": flagged,
        "backbones": rows,
        "classes": classes,
        "per_class_f1": per_class,
        "data": summary,
        # Generated patterns under the paper's class names are still not the paper's photos.
        "paper": paper_results_dict() if applies and not synthetic else None,
        "notes": [],
    }


def machine_metrics(data: dict[str, Any]) -> dict[str, Any]:
    """metrics.json: the decision and each backbone's numbers, for machines."""
    keep = ("n_test", "train_seconds", "images_per_second", "epochs_run")
    return {
        "champion": data["champion"],
        "metric": data["metric"],
        "dataset": data["dataset"],
        "flagged": data["flagged"],
        "backbones": {
            r["backbone"]: {
                **{k: r[k] for k in METRIC_KEYS},
                **{k: r[k] for k in keep},
                "degenerate": r["degenerate"],
                "degenerate_reason": r["degenerate_reason"],
            }
            for r in data["backbones"]
        },
        "synthetic": data["synthetic"],
        "paper": data["paper"],
    }
