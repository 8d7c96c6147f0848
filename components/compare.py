from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def compare(
    champion_metric: str,
    compare_config: dict,
    backbones: list,
    models: dsl.Input[list[dsl.Model]],
    evaluations: dsl.Input[list[dsl.Dataset]],
    tsnes: dsl.Input[list[dsl.Dataset]],
    report: dsl.Output[dsl.Dataset],
    report_html: dsl.Output[dsl.HTML],
    metrics: dsl.Output[dsl.Metrics],
    data: dsl.Input[dsl.Dataset] = None,
):
    """One report over every backbone (inputs from dsl.Collected, matched by backbone name)."""
    import shutil
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import Config
    from fauna.score.metrics import METRIC_KEYS
    from fauna.steps.compare import compare_backbones

    logs.configure()
    timing.begin("compare")  # start-up: the process's age now
    out = Path(report.path)
    cfg = Config.from_dict(
        {
            "compare": {**compare_config, "champion_metric": champion_metric},
            "train": {"backbones": backbones},
        }
    )
    result = compare_backbones(
        [Path(m.path) for m in models],
        [Path(e.path) for e in evaluations],
        [Path(t.path) for t in tsnes],
        out,
        cfg,
        data_dir=Path(data.path) if data is not None else None,
    )
    Path(report_html.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "report.html", report_html.path)
    champion = result["champion"]  # None when every model is flagged as degenerate
    if champion is not None:
        metrics.log_metric(f"champion_{champion['metric']}", float(champion["value"]))
    for backbone, values in result["backbones"].items():
        for key in METRIC_KEYS:
            if values[key] is not None:
                metrics.log_metric(f"{backbone}_{key}", float(values[key]))
    report.metadata.update(
        {
            "champion": champion["backbone"] if champion else "",
            "flagged": sorted(result["flagged"]),
            "synthetic": result["synthetic"],
        }
    )
