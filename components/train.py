from kfp import dsl

from fauna.components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    config_json: str,
    backbone: str,
    data: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
    checkpoint_root: str = "",
):
    """Fine-tune one backbone; with checkpoint_root (s3://) a retried pod resumes its epochs."""
    from pathlib import Path

    from fauna.config import config_from_json
    from fauna.steps.train import train_backbone

    result = train_backbone(
        Path(data.path),
        Path(model.path),
        backbone,
        config_from_json(config_json).train,
        # One prefix per backbone: the tasks of a ParallelFor share checkpoint_root.
        checkpoint_uri=f"{checkpoint_root.rstrip('/')}/{backbone}" if checkpoint_root else None,
    )
    final = result.final
    model.metadata.update(
        {
            "backbone": result.backbone,
            "framework": "keras",
            "epochs_run": result.epochs_run,
            "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second,
            **{k: final[k] for k in ("val_loss", "val_accuracy", "val_macro_f1") if k in final},
        }
    )
