from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split(
    split_config: dict,
    preprocessed: dsl.Input[dsl.Dataset],
    splits: dsl.Output[dsl.Dataset],
):
    """Stratified, duplicate-aware train/val/test split of the preprocessed shards."""
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import section
    from fauna.steps.split import split_dataset

    logs.configure()
    timing.begin("split")  # start-up: the process's age now
    result = split_dataset(
        Path(preprocessed.path), Path(splits.path), section("split", split_config)
    )
    splits.metadata.update(
        {
            "images": result.total,
            **{f"{name}_images": n for name, n in result.counts.items()},
            "classes": len(result.per_class),
            "reconciles": result.reconciles,
        }
    )
