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
    champion: dsl.Output[dsl.Model],
    champion_uri: dsl.OutputPath(str),
    git_sha: str = "",
):
    """Upload the run to S3 and move its dataset's champion pointer only when it is beaten.

    `champion` is the dataset's champion after the decision (promoted or kept): a small
    JSON file whose metadata names its SavedModel export (`export_uri`), metric and value,
    run and git SHA; `champion_uri` is that export's URI ("" when there is no champion).
    The artifact's own URI stays the one KFP assigned: the launcher refuses an output URI
    outside the pipeline root (kubeflow/pipelines backend/src/v2/component/launcher_v2.go,
    uploadOutputArtifacts -> KeyFromURI), so the export's location is metadata.
    """
    import json
    from pathlib import Path

    from fauna import logs
    from fauna.config import Config
    from fauna.steps.publish import champion_after, publish_run

    logs.configure()
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
    summary = champion_after(result, bucket)
    described = {"champion": summary is not None, "git_sha": git_sha, **(summary or {})}
    Path(champion.path).write_text(json.dumps(described, indent=2))
    champion.metadata.update({k: v for k, v in described.items() if v is not None})
    Path(champion_uri).parent.mkdir(parents=True, exist_ok=True)
    Path(champion_uri).write_text(summary["export_uri"] if summary else "")
