from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def augment(
    mode: str,
    augment_config: dict,
    splits: dsl.Input[dsl.Dataset],
    augmented: dsl.Output[dsl.Dataset],
):
    """Balance (oversample) and/or mark train-time augmentation; val and test stay untouched."""
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import section
    from fauna.steps.augment import augment_dataset

    logs.configure()
    timing.begin("augment")  # start-up: the process's age now
    cfg = section("augment", {**augment_config, "mode": mode})
    result = augment_dataset(Path(splits.path), Path(augmented.path), cfg)
    augmented.metadata.update(
        {
            "mode": result.mode,
            **{f"{name}_images": n for name, n in result.counts.items()},
            "train_images_before": sum(result.before.values()),
            "copies_added": result.copies_added,
        }
    )
