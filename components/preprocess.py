from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess(
    image_size: int,
    preprocess_config: dict,
    raw: dsl.Input[dsl.Dataset],
    preprocessed: dsl.Output[dsl.Dataset],
):
    """Resize (+ centre-crop) every image into TFRecord shards, streaming, on all cores."""
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import section
    from fauna.steps.preprocess import preprocess_dataset

    logs.configure()
    timing.begin("preprocess")  # start-up: the process's age now
    cfg = section("preprocess", {**preprocess_config, "image_size": image_size})
    result = preprocess_dataset(Path(raw.path), Path(preprocessed.path), cfg)
    preprocessed.metadata.update(
        {
            "images": result.count,
            "quarantined": result.quarantined,
            "shards": result.shards,
            "image_size": cfg.image_size,
            "mode": cfg.mode,
        }
    )
