from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def preprocess(
    config_json: str,
    raw: dsl.Input[dsl.Dataset],
    preprocessed: dsl.Output[dsl.Dataset],
):
    """Resize (+ centre-crop) every image into TFRecord shards, streaming, on all cores."""
    from pathlib import Path

    from fauna.config import config_from_json
    from fauna.steps.preprocess import preprocess_dataset

    cfg = config_from_json(config_json).preprocess
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
