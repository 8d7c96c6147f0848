from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    evaluate_config: dict,
    model: dsl.Input[dsl.Model],
    data: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
):
    """Test-split metrics of one model, also as Metrics/ClassificationMetrics for the KFP UI."""
    import json
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import section
    from fauna.data.dataset import display_name
    from fauna.score.metrics import METRIC_KEYS
    from fauna.steps.evaluate import evaluate_model

    logs.configure()
    timing.begin("evaluate", preload=("tensorflow", "keras"))  # start-up: imports too
    out = Path(evaluation.path)
    result = evaluate_model(
        Path(model.path), Path(data.path), out, section("evaluate", evaluate_config)
    )
    for key in METRIC_KEYS:
        if result[key] is not None:  # ROC-AUC is undefined with a single test class
            metrics.log_metric(key, float(result[key]))
    metrics.log_metric("n_test", float(result["n_test"]))
    matrix = json.loads((out / "confusion_matrix.json").read_text())
    confusion.log_confusion_matrix(
        [display_name(c) for c in matrix["labels"]],
        [[int(v) for v in r] for r in matrix["counts"]],
    )
    evaluation.metadata.update(
        {
            "backbone": result["backbone"],
            "synthetic": result["synthetic"],
            "degenerate": result["degenerate"],
        }
    )
