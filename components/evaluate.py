from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def evaluate(
    config_json: str,
    model: dsl.Input[dsl.Model],
    data: dsl.Input[dsl.Dataset],
    evaluation: dsl.Output[dsl.Dataset],
    metrics: dsl.Output[dsl.Metrics],
    confusion: dsl.Output[dsl.ClassificationMetrics],
):
    """Test-split metrics of one model, also as Metrics/ClassificationMetrics for the KFP UI."""
    import json
    from pathlib import Path

    from fauna.config import config_from_json
    from fauna.plots import pretty_class
    from fauna.steps.evaluate import evaluate_model

    out = Path(evaluation.path)
    result = evaluate_model(
        Path(model.path), Path(data.path), out, config_from_json(config_json).evaluate
    )
    for key in ("top1", "top3", "macro_f1", "weighted_f1", "roc_auc", "loss"):
        if result[key] is not None:  # ROC-AUC is undefined with a single test class
            metrics.log_metric(key, float(result[key]))
    metrics.log_metric("n_test", float(result["n_test"]))
    matrix = json.loads((out / "confusion_matrix.json").read_text())
    confusion.log_confusion_matrix(
        [pretty_class(c) for c in matrix["labels"]], [[int(v) for v in r] for r in matrix["counts"]]
    )
    evaluation.metadata.update({"backbone": result["backbone"], "synthetic": result["synthetic"]})
