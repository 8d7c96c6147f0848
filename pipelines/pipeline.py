"""The fauna KFP pipeline: data steps, a parallel fan-out over backbones, compare, publish.

`build_pipeline(cfg)` returns the pipeline function built from the one config, so
`fauna compile`, `fauna submit` and `fauna local-run` all run the same graph.

What a user changes per run is a typed pipeline parameter, shown as such (with its
help) in the KFP UI: one per run knob of `fauna.knobs.KNOBS`, the one declaration the
flags and docs come from too. Every other setting of a step reaches that step alone, as its config
section (a dict constant of its task). Infrastructure (images, placement, resources,
timeouts, caching, credentials by Secret reference) is set here and never reaches a
step.
"""

import inspect
from pathlib import Path
from typing import Any

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
from fauna.config import Config, PipelineConfig, section_dict
from fauna.knobs import RUN_KNOBS, TRAIN_KNOBS, run_arguments
from fauna.pipelines.kfp_objects import source_revision
from fauna.sources import secret_env_keys

PIPELINE_NAME = "fauna"
DESCRIPTION = "Train and compare CNN backbones on animal photos; publish the best."
S3_ENV_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
S3_SETTINGS_KEYS = ("S3_ENDPOINT_URL", "AWS_REGION")  # optional: AWS S3 has no endpoint
# What the sources read from the (optional) source Secret: from the table in fauna.sources.
KAGGLE_ENV_KEYS = secret_env_keys()


def _signature(defaults: dict[str, Any]) -> inspect.Signature:
    """The pipeline function's parameters, one per run knob, typed, defaulting to `cfg`."""
    return inspect.Signature(
        [
            inspect.Parameter(
                knob.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=defaults[knob.name],
                annotation=knob.type,
            )
            for knob in RUN_KNOBS
        ],
        return_annotation=dsl.Dataset,
    )


def _docstring() -> str:
    """KFP shows the `Args:` of the pipeline function as the parameters' descriptions."""
    lines = [f"    {knob.name}: {knob.help}" for knob in RUN_KNOBS]
    return "The fauna run.\n\nArgs:\n" + "\n".join(lines) + "\n"


def _step(task: dsl.PipelineTask, p: PipelineConfig, *, s3: bool = False) -> dsl.PipelineTask:
    """CPU step defaults: image, resources, timeout, S3 credentials by Secret reference."""
    task.set_container_image(p.image_cpu)
    _pull_with_secrets(task, p)
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
    # The endpoint is only needed for MinIO, the region outside us-east-1: a Secret
    # without them (AWS S3 in us-east-1) must still work.
    kubernetes.use_secret_as_env(
        task,
        secret_name=p.s3_secret,
        secret_key_to_env={k: k for k in S3_SETTINGS_KEYS},
        optional=True,
    )


def _pull_with_secrets(task: dsl.PipelineTask, p: PipelineConfig) -> None:
    """A private registry: the driver copies these names into the pod's imagePullSecrets
    (backend/src/v2/driver/k8s.go, `GetImagePullSecret`, 2.15.0 lines 477-503)."""
    if p.image_pull_secrets:
        kubernetes.set_image_pull_secrets(task, list(p.image_pull_secrets))


def _place_training(task: dsl.PipelineTask, p: PipelineConfig, gpus: Any) -> None:
    """GPU placement, all set together or none at all (CPU-only clusters such as kind).

    By default only the `nvidia.com/gpu` limit and the standard toleration: that works on
    any cluster with the NVIDIA device plugin; a node selector is opt-in. `gpus`: the
    `gpus_per_task` run parameter (its default `pipeline.gpu_count`).
    """
    task.set_container_image(p.image_gpu if p.use_gpu else p.image_cpu)
    _pull_with_secrets(task, p)
    task.set_cpu_request(p.train_cpu).set_cpu_limit(p.train_cpu)
    task.set_memory_request(p.train_memory).set_memory_limit(p.train_memory)
    kubernetes.set_timeout(task, p.train_timeout_seconds)
    # No set_retry: the backend drops it for tasks inside dsl.ParallelFor
    # (kubeflow/pipelines#12389, #13897; #13605 lifts it only for one-task loop bodies),
    # and Argo's default policy would not retry a deleted (preempted) pod anyway (#13386).
    # A failed run is retried as a whole instead (`fauna submit --wait`, pipeline.run_retries).
    if p.use_gpu:
        task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
        for key, value in p.gpu_node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        kubernetes.add_toleration(
            task, key=p.gpu_toleration_key, operator="Exists", effect="NoSchedule"
        )


def build_pipeline(cfg: Config, *, mirror_checkpoints: bool = True):
    """The pipeline function: run parameters default to `cfg`, step settings come from it.

    mirror_checkpoints: train mirrors each epoch's checkpoint to s3://<bucket>/checkpoints
    (a retried run resumes from it); off for a store that dies with the run (the local
    run's embedded server), where the uploads could never be used.

    Longer than usual: the graph (every task, its settings and its placement) reads best
    as one function, the way KFP's DSL is written; the helpers above hold what repeats.
    """
    p = cfg.pipeline
    sections = {
        name: section_dict(cfg, name)
        for name in (
            "data",
            "preprocess",
            "split",
            "augment",
            "train",
            "evaluate",
            "tsne",
            "compare",
        )
    }
    # A knob is a run parameter, not also a (silently ignored) value in its step's section.
    # The train section keeps its values: they are what a train knob is compared with
    # (`fauna.knobs.train_settings`: a changed knob applies to every backbone).
    for knob in RUN_KNOBS:
        name, _, key = (knob.path or "").partition(".")
        if name in sections and name != "train":
            del sections[name][key]

    def fauna_pipeline(*values: Any) -> dsl.Dataset:
        run = dict(zip([k.name for k in RUN_KNOBS], values, strict=True))
        source, backbones, champion_metric = (
            run["source"],
            run["backbones"],
            run["champion_metric"],
        )
        ingest_task = _step(ingest(source=source, data_config=sections["data"]), p, s3=True)
        # The source may change behind the same name (a new Kaggle version): never cache ingest.
        ingest_task.set_caching_options(False)
        kubernetes.use_secret_as_env(
            ingest_task,
            secret_name=p.kaggle_secret,
            secret_key_to_env={k: k for k in KAGGLE_ENV_KEYS},
            optional=True,
        )
        pre = _step(
            preprocess(
                image_size=run["image_size"],
                preprocess_config=sections["preprocess"],
                raw=ingest_task.outputs["raw"],
            ),
            p,
        )
        splits = _step(
            split(split_config=sections["split"], preprocessed=pre.outputs["preprocessed"]), p
        )
        augmented = _step(
            augment(
                mode=run["augment_mode"],
                augment_config=sections["augment"],
                splits=splits.outputs["splits"],
            ),
            p,
        )
        data = augmented.outputs["augmented"]

        with dsl.ParallelFor(backbones, name="backbones", parallelism=p.parallelism) as backbone:
            train_task = train(
                backbone=backbone,
                epochs=run["epochs"],
                train_config=sections["train"],
                **{k.name: run[k.name] for k in TRAIN_KNOBS},
                # A whole value: the backend substitutes placeholders nowhere else (see
                # `backend_conformance_problems`); the component builds the S3 path.
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                checkpoint_root=f"s3://{p.bucket}/checkpoints" if mirror_checkpoints else "",
                data=data,
            )
            _place_training(train_task, p, run["gpus_per_task"])
            _use_s3_secret(train_task, p)  # checkpoints, and weights from s3://
            model = train_task.outputs["model"]
            eval_task = _step(
                evaluate(evaluate_config=sections["evaluate"], model=model, data=data), p
            )
            evaluation = eval_task.outputs["evaluation"]
            # t-SNE reuses evaluate's features: no second model load and pass over the test set.
            tsne_task = _step(
                tsne(tsne_config=sections["tsne"], evaluation=evaluation, data=data), p
            )

        compare_task = _step(
            compare(
                champion_metric=champion_metric,
                compare_config=sections["compare"],
                backbones=backbones,
                models=dsl.Collected(model),
                evaluations=dsl.Collected(evaluation),
                tsnes=dsl.Collected(tsne_task.outputs["tsne"]),
                data=data,
            ),
            p,
        )
        publish_task = _step(
            publish(
                champion_metric=champion_metric,
                compare_config=sections["compare"],
                bucket=p.bucket,
                evaluate_config=sections["evaluate"],
                run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
                git_sha=source_revision(Path(__file__).resolve().parent),
                report=compare_task.outputs["report"],
                models=dsl.Collected(model),
                data=data,
            ),
            p,
            s3=True,
        )
        # Publishing moves the champion pointer: it must run every time.
        publish_task.set_caching_options(False)
        if cfg.model_registry.url:  # publish registers every model there (fauna.store.registry)
            publish_task.set_env_variable("MODEL_REGISTRY_URL", cfg.model_registry.url)
        return publish_task.outputs["published"]

    fauna_pipeline.__signature__ = _signature(run_arguments(cfg))  # type: ignore[attr-defined]
    fauna_pipeline.__doc__ = _docstring()
    return dsl.pipeline(name=PIPELINE_NAME, description=DESCRIPTION)(fauna_pipeline)
