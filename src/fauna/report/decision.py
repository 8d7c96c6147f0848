"""What the comparison decides: the champion (fauna.score.policy: never a flagged or no-skill model,
and only ahead on evidence), each score's uncertainty, the dataset, the paper.

`report_data` assembles everything the report is rendered from (saved as report.json,
so a later step can re-render it with notes); `machine_metrics` is the part machines
read (metrics.json): the champion, the dataset it belongs to, each backbone's scalars.
"""

from __future__ import annotations

import time
from typing import Any

from fauna.paper import paper_applies, paper_results_dict
from fauna.report.gather import CompareError
from fauna.score.metrics import METRIC_KEYS, champion_value
from fauna.score.policy import Entrant, Predictions, baseline, choose, interval, resolution
from fauna.store.champion import DatasetId

TITLE = "fauna: backbone comparison"


def choose_champion(
    rows: list[dict[str, Any]],
    predictions: dict[str, Predictions],
    policy: Any,
    validation: dict[str, float | None] | None = None,
) -> tuple[dict[str, Any] | None, dict[str, str]]:
    """The champion by fauna.score.policy (never a flagged or no-skill model), and the excluded.

    None when no backbone is eligible: then there is no champion.
    """
    metric = policy.champion_metric
    if all(champion_value(r, metric) is None for r in rows):
        raise CompareError(f"no backbone has a value for the champion metric {metric!r}")
    validation = validation or {}
    flagged = {
        r["backbone"]: r.get("degenerate_reason") or "flagged as degenerate"
        for r in rows
        if r.get("degenerate")
    }
    entrants = [
        Entrant(
            r["backbone"],
            predictions.get(r["backbone"]),
            flagged.get(r["backbone"]),
            validation.get(r["backbone"]),
            r.get("params"),
        )
        for r in rows
    ]
    choice = choose(entrants, metric, policy)
    if choice.champion is None:
        return None, choice.excluded
    row = next(r for r in rows if r["backbone"] == choice.champion)
    value = champion_value(row, metric)
    return {
        "backbone": choice.champion,
        "metric": metric,
        "value": choice.value if value is None else value,
        "evidence": choice.evidence,
    }, choice.excluded


def with_uncertainty(
    rows: list[dict[str, Any]], predictions: dict[str, Predictions], policy: Any
) -> dict[str, Any]:
    """Each row's interval, test size, chance and majority rate; the run's (for the report)."""
    metric = policy.champion_metric
    for r in rows:
        pred = predictions.get(r["backbone"])
        if pred is None:
            r.update(interval=None, chance=None, majority=None)
            continue
        found = interval(pred, metric, policy)
        base = baseline(pred, metric)
        r["interval"] = None if found is None else found.to_dict()
        r["n_test"] = pred.n
        r["chance"] = 1 / pred.num_classes
        r["majority"] = base.majority_rate
    known = [p for p in predictions.values()]
    n_test = min((p.n for p in known), default=None)
    return {
        "chance": None if not known else 1 / known[0].num_classes,
        "n_test": n_test,
        "resolution": None if n_test is None else resolution(n_test, policy),
    }


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
    policy: Any,
    per_class: dict[str, dict[str, float]],
    summary: dict[str, Any],
    predictions: dict[str, Predictions] | None = None,
    validation: dict[str, float | None] | None = None,
) -> dict[str, Any]:
    """Everything the report shows, decided: champion, flags, dataset, the paper or not.

    `policy` is the `compare` config section; `predictions` each backbone's answers per
    test image (fauna.score.policy), `validation` its validation score for the tie-break.
    """
    predictions = predictions or {}
    champion, flagged = choose_champion(rows, predictions, policy, validation)
    uncertainty = with_uncertainty(rows, predictions, policy)
    applies = paper_applies(classes)
    dataset = DatasetId.of(source, classes)
    return {
        "title": TITLE,
        "generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "synthetic": synthetic,
        "source": source,
        "dataset": {**dataset.to_dict(), "paper_classes": applies},
        "metric": policy.champion_metric,
        **uncertainty,
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
    keep += ("interval", "chance", "majority")
    return {
        "champion": data["champion"],
        "metric": data["metric"],
        "chance": data["chance"],
        "n_test": data["n_test"],
        "resolution": data["resolution"],
        "dataset": data["dataset"],
        "flagged": data["flagged"],
        "backbones": {
            r["backbone"]: {
                **{k: r[k] for k in METRIC_KEYS},
                **{k: r.get(k) for k in keep},
                "degenerate": r["degenerate"],
                "degenerate_reason": r["degenerate_reason"],
            }
            for r in data["backbones"]
        },
        "synthetic": data["synthetic"],
        "paper": data["paper"],
    }
