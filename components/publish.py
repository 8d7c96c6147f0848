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
    """Upload the run to S3 and move its dataset's champion pointer only when it is beaten."""
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import Config
    from fauna.steps.publish import publish_run

    logs.configure()
    timing.begin("publish")  # start-up: the process's age now
    cfg = Config.from_dict(
        {
            "compare": {"champion_metric": champion_metric},
            "pipeline": {"bucket": bucket},
            "evaluate": evaluate_config,
        }
    )
    # The step writes the report with its verdict and publish.json into its own output.
    result = publish_run(
        Path(report.path),
        [Path(m.path) for m in models],
        Path(data.path),
        run_id,
        Path(published.path),
        cfg,
    )
    published.metadata.update(
        {
            "run_uri": result.run_uri,
            "report_uri": result.report_uri,
            "promoted": result.promotion.promoted,
            "reason": result.promotion.reason,
        }
    )
