"""The fauna KFP pipeline: data steps, a parallel fan-out over backbones, compare, publish.

`build_pipeline(cfg)` returns the pipeline function with every default taken from
the one config, so `fauna compile`, `fauna submit` and `fauna local-run` all run
the same graph. Placement (GPU, node selector, toleration), resources, timeouts,
caching and credentials by Secret reference are set here, from the config.
"""

import json

from kfp import dsl, kubernetes

from fauna.components.augment import augment
from fauna.components.compare import compare
from fauna.components.evaluate import evaluate
from fauna.components.ingest import ingest
from fauna.components.preprocess import preprocess
from fauna.components.publish import publish
from fauna.components.split import split
from fauna.components.train import train
from fauna.components.tsne import tsne
from fauna.config import Config, PipelineConfig

PIPELINE_NAME = "fauna"
S3_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_SETTINGS_KEYS = ("S3_ENDPOINT_URL",)
KAGGLE_ENV_KEYS = ("KAGGLE_USERNAME", "KAGGLE_KEY")


def _step(task: dsl.PipelineTask, p: PipelineConfig, *, s3: bool = False) -> dsl.PipelineTask:
    """CPU step defaults: image, resources, timeout, S3 credentials by Secret reference."""
    task.set_container_image(p.image_cpu)
    task.set_cpu_request(p.step_cpu).set_cpu_limit(p.step_cpu)
    task.set_memory_request(p.step_memory).set_memory_limit(p.step_memory)
    kubernetes.set_timeout(task, p.step_timeout_seconds)
    if s3:
        _use_s3_secret(task, p)
    return task


def _use_s3_secret(task: dsl.PipelineTask, p: PipelineConfig) -> None:
    kubernetes.use_secret_as_env(
        task, secret_name=p.s3_secret, secret_key_to_env={k: k for k in S3_ENV_KEYS}
    )
    # The endpoint is only needed for MinIO: a Secret without it (AWS S3) must still work.
    kubernetes.use_secret_as_env(
        task,
        secret_name=p.s3_secret,
        secret_key_to_env={k: k for k in S3_SETTINGS_KEYS},
        optional=True,
    )


def _place_training(task: dsl.PipelineTask, p: PipelineConfig) -> None:
    """GPU placement, all set together or none at all (CPU-only clusters such as kind)."""
    task.set_container_image(p.image_gpu if p.use_gpu else p.image_cpu)
    task.set_cpu_request(p.train_cpu).set_cpu_limit(p.train_cpu)
    task.set_memory_request(p.train_memory).set_memory_limit(p.train_memory)
    kubernetes.set_timeout(task, p.train_timeout_seconds)
    if p.train_retries:
        task.set_retry(num_retries=p.train_retries, backoff_duration="60s")
    if p.use_gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(p.gpu_count)
        for key, value in p.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        kubernetes.add_toleration(
            task, key=p.gpu_toleration_key, operator="Exists", effect="NoSchedule"
        )


def build_pipeline(cfg: Config):
    """The pipeline function, with its parameter defaults taken from `cfg`."""
    p = cfg.pipeline
    default_config = json.dumps(cfg.to_dict(), sort_keys=True)

    @dsl.pipeline(
        name=PIPELINE_NAME,
        description="Fine-tune and compare CNN backbones on 30 animal species; publish the best.",
    )
    def fauna_pipeline(
        config_json: str = default_config,
        source: str = cfg.data.source,
        backbones: list = list(cfg.train.backbones),  # noqa: B006 (KFP reads the default)
    ) -> dsl.Dataset:
        ingest_task = _step(ingest(config_json=config_json, source=source), p, s3=True)
        # The source may change behind the same name (a new Kaggle version): never cache ingest.
        ingest_task.set_caching_options(False)
        ingest_task.set_display_name("ingest")
        kubernetes.use_secret_as_env(
            ingest_task,
            secret_name=p.kaggle_secret,
            secret_key_to_env={k: k for k in KAGGLE_ENV_KEYS},
            optional=True,
        )
        pre = _step(preprocess(config_json=config_json, raw=ingest_task.outputs["raw"]), p)
        splits = _step(split(config_json=config_json, preprocessed=pre.outputs["preprocessed"]), p)
        balanced = _step(augment(config_json=config_json, splits=splits.outputs["splits"]), p)
        data = balanced.outputs["balanced"]

        with dsl.ParallelFor(backbones, name="backbones") as backbone:
            train_task = train(
                config_json=config_json,
                backbone=backbone,
                data=data,
                # Per-epoch checkpoints in S3: a retried (preempted) pod resumes, not restarts.
                checkpoint_root=f"s3://{p.bucket}/checkpoints/{dsl.PIPELINE_JOB_ID_PLACEHOLDER}",
            )
            _place_training(train_task, p)
            _use_s3_secret(train_task, p)  # checkpoints, and weights from s3://
            train_task.set_display_name("train")
            model = train_task.outputs["model"]
            eval_task = _step(evaluate(config_json=config_json, model=model, data=data), p)
            tsne_task = _step(tsne(config_json=config_json, model=model, data=data), p)

        compare_task = _step(
            compare(
                config_json=config_json,
                models=dsl.Collected(model),
                evaluations=dsl.Collected(eval_task.outputs["evaluation"]),
                tsnes=dsl.Collected(tsne_task.outputs["tsne"]),
                data=data,
            ),
            p,
        )
        publish_task = _step(
            publish(
                config_json=config_json,
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                report=compare_task.outputs["report"],
                models=dsl.Collected(model),
                data=data,
            ),
            p,
            s3=True,
        )
        # Publishing moves the champion pointer: it must run every time.
        publish_task.set_caching_options(False)
        return publish_task.outputs["published"]

    return fauna_pipeline
