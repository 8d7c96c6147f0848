from kfp import dsl

from fauna.components import GPU_IMAGE


@dsl.component(base_image=GPU_IMAGE, install_kfp_package=False)
def train(
    backbone: str,
    epochs: int,
    train_config: dict,
    batch_size: int,
    learning_rate: float,
    fine_tune_learning_rate: float,
    scratch_learning_rate: float,
    fine_tune_layers: int,
    weights: str,
    backbone_overrides: dict,
    run_id: str,
    checkpoint_root: str,
    data: dsl.Input[dsl.Dataset],
    model: dsl.Output[dsl.Model],
):
    """Train one backbone; its checkpoints live under checkpoint_root/run_id/backbone (s3://).

    `run_id` arrives as a whole parameter value because the KFP backend substitutes
    runtime placeholders only there; the path is built here. A re-run of the same
    run (the retry API) finds its checkpoints and resumes; another run starts afresh.
    The train knobs (batch_size ... backbone_overrides, `fauna.knobs.TRAIN_KNOBS`) are run
    parameters; `train_settings` lays them over the compiled section.
    """
    given = dict(locals())  # the parameters (nothing else is defined yet)
    from pathlib import Path

    from fauna import logs, timing
    from fauna.knobs import TRAIN_KNOBS, train_settings
    from fauna.steps.train import train_backbone

    logs.configure()
    timing.begin("train", backbone=backbone, preload=("tensorflow", "keras"))
    checkpoint_uri = None
    if checkpoint_root:
        checkpoint_uri = f"{checkpoint_root.rstrip('/')}/{run_id}/{backbone}"
    result = train_backbone(
        Path(data.path),
        Path(model.path),
        backbone,
        train_settings(train_config, {k.name: given[k.name] for k in TRAIN_KNOBS}),
        epochs=epochs or None,
        checkpoint_uri=checkpoint_uri,
    )
    final = result.kept  # the epoch whose weights the model holds
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
