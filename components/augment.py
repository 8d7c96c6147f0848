from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def augment(
    config_json: str,
    splits: dsl.Input[dsl.Dataset],
    balanced: dsl.Output[dsl.Dataset],
):
    """Balance (oversample) and/or mark train-time augmentation; val and test stay untouched."""
    from pathlib import Path

    from fauna.config import config_from_json
    from fauna.steps.augment import balance_dataset

    result = balance_dataset(
        Path(splits.path), Path(balanced.path), config_from_json(config_json).augment
    )
    balanced.metadata.update(
        {
            "mode": result.mode,
            **{f"{name}_images": n for name, n in result.counts.items()},
            "train_images_before": sum(result.before.values()),
            "copies_added": result.copies_added,
        }
    )
