from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def publish(
    champion_metric: str,
    bucket: str,
    evaluate_config: dict,
    run_id: str,
    report: dsl.Input[dsl.Dataset],
    models: dsl.Input[list[dsl.Model]],
    data: dsl.Input[dsl.Dataset],
    published: dsl.Output[dsl.Dataset],
):
    """Upload the run to S3 and move the champion pointer only when it is beaten."""
    import json
    import shutil
    from pathlib import Path

    from fauna import logs
    from fauna.config import Config
    from fauna.steps.publish import publish_run

    logs.configure()
    cfg = Config.from_dict(
        {
            "compare": {"champion_metric": champion_metric},
            "pipeline": {"bucket": bucket},
            "evaluate": evaluate_config,
        }
    )
    # Work on a copy: the promotion note is added to the report, and inputs are read-only.
    report_dir = Path(published.path) / "report"
    shutil.copytree(report.path, report_dir)
    result = publish_run(report_dir, [Path(m.path) for m in models], Path(data.path), run_id, cfg)
    (Path(published.path) / "publish.json").write_text(json.dumps(result.to_dict(), indent=2))
    published.metadata.update(
        {
            "run_uri": result.run_uri,
            "report_uri": result.report_uri,
            "promoted": result.promotion.promoted,
            "reason": result.promotion.reason,
        }
    )
