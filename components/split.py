from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def split(
    config_json: str,
    preprocessed: dsl.Input[dsl.Dataset],
    splits: dsl.Output[dsl.Dataset],
):
    """Stratified, duplicate-aware train/val/test split of the preprocessed shards."""
    from pathlib import Path

    from fauna.config import config_from_json
    from fauna.steps.split import split_dataset

    result = split_dataset(
        Path(preprocessed.path), Path(splits.path), config_from_json(config_json).split
    )
    splits.metadata.update(
        {
            "images": result.total,
            **{f"{name}_images": n for name, n in result.counts.items()},
            "classes": len(result.per_class),
            "reconciles": result.reconciles,
        }
    )
