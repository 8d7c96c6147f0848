"""The compiled pipeline YAML: fan-out, fan-in, placement, caching, secrets by reference."""

import json
from pathlib import Path

import pytest
import yaml
from kfp import compiler, dsl

from fauna import knobs
from fauna.cli import build_parser
from fauna.config import Config, ConfigError, load_config, section_dict
from fauna.errors import FaunaError
from fauna.knobs import KFP_TYPES, KNOBS, RUN_KNOBS, TRAIN_KNOBS, run_arguments, train_settings
from fauna.pipelines import cluster
from fauna.pipelines.cluster import compile_pipeline
from fauna.pipelines.conformance import backend_conformance_problems

ROOT = Path(__file__).resolve().parents[1]


def _compile(tmp_path: Path, **pipeline) -> tuple[str, list[dict]]:
    cfg = Config().merged({"pipeline": pipeline}) if pipeline else Config()
    path = compile_pipeline(cfg, tmp_path / f"p{len(list(tmp_path.iterdir()))}.yaml")
    text = path.read_text()
    return text, list(yaml.safe_load_all(text))


@pytest.fixture(scope="module")
def gpu_docs(tmp_path_factory):
    return _compile(tmp_path_factory.mktemp("gpu"), use_gpu=True, image_gpu="reg/fauna-gpu:abc123")


def _spec(docs):
    return docs[0]


def _platform(docs):
    return docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def _executor(docs, name):
    return _spec(docs)["deploymentSpec"]["executors"][f"exec-{name}"]["container"]


def test_compile_is_deterministic(tmp_path):
    first, _ = _compile(tmp_path)
    second, _ = _compile(tmp_path)
    assert first == second


def test_fan_out_over_backbones_and_collected_fan_in(gpu_docs):
    _, docs = gpu_docs
    spec = _spec(docs)
    root = spec["root"]
    assert root["inputDefinitions"]["parameters"]["backbones"]["defaultValue"] == [
        "vgg16",
        "resnet50",
        "inceptionv3",
    ]
    loop = next(t for t in root["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["parameterIterator"]["items"]["inputParameter"].endswith("backbones")
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert {"train", "evaluate", "tsne"} <= set(body)
    # No task retry policy: the backend ignores it inside ParallelFor (kubeflow/pipelines#12389,
    # #13897) and Argo does not retry evicted pods (#13386); `fauna submit` retries the run.
    assert "retryPolicy" not in body["train"]
    # Checkpoints are run-scoped: the run id travels as a whole value, the path is built inside.
    params = body["train"]["inputs"]["parameters"]
    assert params["checkpoint_root"]["runtimeValue"]["constant"] == "s3://fauna/checkpoints"
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    # compare and publish sit outside the loop and take lists of artifacts (dsl.Collected).
    compare = root["dag"]["tasks"]["compare"]
    assert set(compare["inputs"]["artifacts"]) >= {"models", "evaluations", "tsnes"}
    models_in = spec["components"]["comp-compare"]["inputDefinitions"]["artifacts"]["models"]
    assert models_in["isArtifactList"] is True
    assert "compare" in root["dag"]["tasks"]["publish"]["dependentTasks"]
    publish_in = spec["components"]["comp-publish"]["inputDefinitions"]["artifacts"]["models"]
    assert publish_in["isArtifactList"] is True


def test_gpu_placement_when_on(gpu_docs):
    _, docs = gpu_docs
    train = _executor(docs, "train")
    assert train["image"] == "reg/fauna-gpu:abc123"
    assert train["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    # The count is the `gpus_per_task` run parameter (default pipeline.gpu_count): the
    # driver resolves an input placeholder in `resourceCount` when it builds the pod
    # (kubeflow/pipelines backend/src/v2/driver/driver.go: `accelerator.GetResourceCount()`
    # through `resolvePodSpecInputRuntimeParameter`, since PR #11501; SDK:
    # set_accelerator_limit takes a PipelineChannel).
    count = train["resources"]["accelerator"]["resourceCount"]
    assert count == "{{$.inputs.parameters['pipelinechannel--gpus_per_task']}}"
    spec = next(d for d in docs if "root" in d)
    knob = spec["root"]["inputDefinitions"]["parameters"]["gpus_per_task"]
    assert knob["defaultValue"] == Config().pipeline.gpu_count == 1
    k8s = _platform(docs)["exec-train"]
    # Works anywhere by default: the GPU limit and the standard toleration, no selector.
    assert "nodeSelector" not in k8s
    assert k8s["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert int(k8s["activeDeadlineSeconds"]) == Config().pipeline.train_timeout_seconds


def test_a_node_selector_and_pull_secrets_when_configured(tmp_path):
    """The driver applies both to the pod (backend/src/v2/driver/k8s.go `extendPodSpecPatch`:
    `GetNodeSelector`, and `GetImagePullSecret` -> podSpec.ImagePullSecrets)."""
    eks = {"node.kubernetes.io/instance-type": "g4dn.xlarge"}
    pipeline = {"gpu_node_selector": eks, "image_pull_secrets": ["regcred", "mirror"]}
    _, docs = _compile(tmp_path, **pipeline)
    platform = _platform(docs)
    assert platform["exec-train"]["nodeSelector"]["labels"] == eks
    assert len(platform) == 9  # every task pod, not only those with secrets or GPUs
    for name, executor in platform.items():
        secrets = executor["imagePullSecret"]
        assert [s["secretName"] for s in secrets] == ["regcred", "mirror"], name
        # The 2.15 driver resolves secretNameParameter first: a constant, the same name.
        constants = [s["secretNameParameter"]["runtimeValue"]["constant"] for s in secrets]
        assert constants == ["regcred", "mirror"], name
    _, docs = _compile(tmp_path)
    assert not any("imagePullSecret" in e for e in _platform(docs).values())


def test_no_gpu_settings_when_off(tmp_path):
    _, docs = _compile(tmp_path, use_gpu=False, image_cpu="reg/fauna-cpu:abc123")
    train = _executor(docs, "train")
    assert train["image"] == "reg/fauna-cpu:abc123"
    assert "accelerator" not in train.get("resources", {})
    k8s = _platform(docs)["exec-train"]
    assert "nodeSelector" not in k8s and "tolerations" not in k8s
    executors = docs[0]["deploymentSpec"]["executors"].values()
    assert not any("accelerator" in e["container"].get("resources", {}) for e in executors)
    assert not any("tolerations" in e or "nodeSelector" in e for e in _platform(docs).values())


def test_every_step_has_image_resources_and_timeout(gpu_docs):
    _, docs = gpu_docs
    executors = _spec(docs)["deploymentSpec"]["executors"]
    assert len(executors) == 9
    for name, executor in executors.items():
        container = executor["container"]
        assert container["image"].startswith(("ghcr.io/", "reg/")), name
        assert container["resources"]["cpuLimit"] > 0, name
        assert int(_platform(docs)[name]["activeDeadlineSeconds"]) > 0, name


def test_caching_off_for_ingest_and_publish_only(gpu_docs):
    _, docs = gpu_docs
    tasks = _spec(docs)["root"]["dag"]["tasks"]
    assert tasks["ingest"]["cachingOptions"] == {}
    assert tasks["publish"]["cachingOptions"] == {}
    for name in ("preprocess", "split", "augment", "compare"):
        assert tasks[name]["cachingOptions"] == {"enableCache": True}, name


def test_secrets_by_reference_only(tmp_path, monkeypatch):
    secret = "AKIA-very-secret-value-123"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "KAGGLE_KEY", "KAGGLE_USERNAME"):
        monkeypatch.setenv(key, secret)
    text, docs = _compile(tmp_path)
    assert secret not in text
    platform = _platform(docs)

    def secret_env(executor):
        return {
            (s["secretName"], e["envVar"], s.get("optional", False))
            for s in platform[executor]["secretAsEnv"]
            for e in s["keyToEnv"]
        }

    s3 = {
        ("fauna-s3", "AWS_ACCESS_KEY_ID", False),
        ("fauna-s3", "AWS_SECRET_ACCESS_KEY", False),
        ("fauna-s3", "S3_ENDPOINT_URL", True),  # absent for AWS S3
        ("fauna-s3", "AWS_REGION", True),  # absent: the storage layer's us-east-1
    }
    kaggle = {("fauna-kaggle", "KAGGLE_USERNAME", True), ("fauna-kaggle", "KAGGLE_KEY", True)}
    assert secret_env("exec-ingest") == s3 | kaggle
    assert secret_env("exec-publish") == s3
    assert secret_env("exec-train") == s3
    assert "secretAsEnv" not in platform.get("exec-preprocess", {})


@dsl.component(base_image="python:3.11")
def _echo(text: str) -> str:
    return text


@dsl.pipeline(name="embedded-placeholder")
def _embedded_placeholder_pipeline():
    _echo(text=f"s3://bucket/checkpoints/{dsl.PIPELINE_JOB_ID_PLACEHOLDER}")
    _echo(text=dsl.PIPELINE_JOB_ID_PLACEHOLDER)


def test_backend_conformance_flags_placeholders_inside_longer_strings(tmp_path):
    """The KFP driver substitutes runtime placeholders only as whole values (resolve.go)."""
    path = tmp_path / "bad.yaml"
    compiler.Compiler().compile(_embedded_placeholder_pipeline, package_path=str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    problems = backend_conformance_problems(spec)
    assert len(problems) == 1, problems
    assert "s3://bucket/checkpoints/{{$.pipeline_job_uuid}}" in problems[0]
    with pytest.raises(FaunaError, match="would break on a KFP backend"):
        cluster.check_compiled(path)
    assert not path.exists()  # a non-conforming package is not left behind


def test_fauna_pipeline_conforms_to_the_backend(gpu_docs):
    _, docs = gpu_docs
    assert backend_conformance_problems(_spec(docs)) == []


def test_every_run_knob_is_a_typed_pipeline_parameter_with_the_params_yaml_default(gpu_docs):
    _, docs = gpu_docs
    params = _spec(docs)["root"]["inputDefinitions"]["parameters"]
    assert list(params) == sorted(k.name for k in RUN_KNOBS)
    configured = load_config(ROOT / "params.yaml")
    for knob in RUN_KNOBS:
        param = params[knob.name]
        assert param["parameterType"] == KFP_TYPES[knob.type], knob.name
        # YAML numbers inside a Struct come back as floats: compare as JSON numbers.
        assert param["defaultValue"] == knob.default_in(configured), knob.name
        assert param["description"] == knob.help, knob.name  # what the KFP UI shows
    assert set(run_arguments(Config())) == {k.name for k in RUN_KNOBS}
    assert run_arguments(Config(), epochs=3, backbones=None)["epochs"] == 3
    with pytest.raises(ValueError, match="unknown run parameter"):
        run_arguments(Config(), dense_units=[8])


def test_train_knobs_reach_the_train_task_as_whole_run_parameters(gpu_docs):
    """The compiled pipeline changes only when code does: a knob is a parameter, not a constant."""
    _, docs = gpu_docs
    spec = _spec(docs)
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    train_inputs = body["train"]["inputs"]["parameters"]
    for knob in [*TRAIN_KNOBS, knobs.BY_NAME["epochs"]]:
        fed = train_inputs[knob.name]["componentInputParameter"]
        assert fed.endswith(knob.name), (knob.name, fed)
    assert "iteratorPolicy" not in loop  # parallelism 0: every backbone at once


def test_a_pipeline_without_the_checkpoint_mirror_gives_train_no_checkpoint_root(tmp_path):
    """The local run's embedded S3 dies with the run: train keeps its checkpoints on disk."""
    from fauna.pipelines.pipeline import build_pipeline

    path = tmp_path / "local.yaml"
    compiler.Compiler().compile(build_pipeline(Config(), mirror_checkpoints=False), str(path))
    spec = next(yaml.safe_load_all(path.read_text()))
    loop = next(t for t in spec["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    params = body["train"]["inputs"]["parameters"]
    assert params["checkpoint_root"]["runtimeValue"]["constant"] == ""
    assert params["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"


def test_parallelism_is_compiled_into_the_loop(tmp_path):
    _, docs = _compile(tmp_path, parallelism=1)
    loop = next(t for t in _spec(docs)["root"]["dag"]["tasks"].values() if "parameterIterator" in t)
    assert loop["iteratorPolicy"] == {"parallelismLimit": 1}
    with pytest.raises(
        ConfigError, match="pipeline.parallelism: Input should be greater than or equal to 0"
    ):
        Config().merged({"pipeline": {"parallelism": -1}})


def test_submit_schedule_and_local_run_take_the_same_knob_flags():
    def knob_flags(command: str) -> set[str]:
        parser = build_parser(command)
        sub = parser._subparsers._group_actions[0].choices[command]
        group = next(g for g in sub._action_groups if g.title.startswith("run knobs"))
        return {flag for action in group._group_actions for flag in action.option_strings}

    expected = {knob.flag for knob in KNOBS}
    assert knob_flags("submit") == expected
    assert knob_flags("schedule") == expected
    assert knob_flags("local-run") == expected | {"--data"}  # $DATA's old flag stays an alias
    args = build_parser("submit").parse_args(["submit", "--parallelism", "2", "--epochs", "1"])
    assert knobs.with_compiled_knobs(Config(), args).pipeline.parallelism == 2
    assert knobs.values_from_args(args)["epochs"] == 1


def _section() -> dict:
    return json.loads(json.dumps(section_dict(Config(), "train")))  # as the task receives it


def test_an_unchanged_knob_keeps_the_per_backbone_settings():
    section = _section()
    values = {k.name: run_arguments(Config())[k.name] for k in TRAIN_KNOBS}
    train = train_settings(section, values)
    assert train.for_backbone("resnet50").learning_rate == 1e-3  # params.yaml's override
    assert train.for_backbone("vgg16").learning_rate == 1e-4
    assert train.for_backbone("inceptionv3").batch_size == 32


def test_a_changed_knob_applies_to_every_backbone_unless_its_override_is_set_too():
    section = _section()
    values = {k.name: run_arguments(Config())[k.name] for k in TRAIN_KNOBS}
    values |= {"learning_rate": 5e-4, "batch_size": 16}
    values["backbone_overrides"] = json.loads(json.dumps(values["backbone_overrides"]))
    values["backbone_overrides"]["ResNet50"] = {
        **values["backbone_overrides"].pop("resnet50"),
        "learning_rate": 2e-3,  # set by the user: wins for resnet50 alone
    }
    train = train_settings(section, values)
    assert train.learning_rate == 5e-4
    assert train.for_backbone("resnet50").learning_rate == 2e-3
    assert train.for_backbone("inceptionv3").learning_rate == 5e-4  # override shadowed no more
    assert {train.for_backbone(b).batch_size for b in ("resnet50", "inceptionv3", "vgg16")} == {16}
    # Other per-backbone settings stay: resnet50's dropout, inceptionv3's fine_tune_layers.
    assert train.for_backbone("resnet50").dropout == 0.2
    assert train.for_backbone("inceptionv3").fine_tune_layers == -1


def test_the_overrides_knob_can_drop_a_backbones_entry_and_bad_values_are_one_line():
    section = _section()
    values = {k.name: run_arguments(Config())[k.name] for k in TRAIN_KNOBS}
    values["backbone_overrides"] = {}
    assert train_settings(section, values).for_backbone("vgg16").scratch_learning_rate == 1e-3
    with pytest.raises(ConfigError, match="train.learning_rate: Input should be greater than 0"):
        train_settings(section, {**values, "learning_rate": -1.0})
    with pytest.raises(ConfigError, match="train.overrides: expected a JSON object"):
        train_settings(section, {**values, "backbone_overrides": [1]})


def test_the_docs_table_is_generated_from_the_spec():
    """docs/pipeline.md's knob table is `knobs.markdown_table()`; regenerate it with
    .venv/bin/python -c 'from fauna.knobs import markdown_table as t; print(t())'"""
    doc = (ROOT / "docs" / "pipeline.md").read_text()
    begin, end = "<!-- knobs: begin -->\n", "\n<!-- knobs: end -->"
    table = doc[doc.index(begin) + len(begin) : doc.index(end)]
    assert table == knobs.markdown_table(load_config(ROOT / "params.yaml"))


def test_each_step_gets_only_its_own_config_section(gpu_docs):
    text, docs = gpu_docs
    tasks = _spec(docs)["root"]["dag"]["tasks"]
    constants = {
        name: {
            key: value["runtimeValue"]["constant"]
            for key, value in task["inputs"].get("parameters", {}).items()
            if "runtimeValue" in value
        }
        for name, task in tasks.items()
        if "inputs" in task
    }
    assert set(constants["preprocess"]["preprocess_config"]) == {
        "mode",
        "jpeg_quality",
        "images_per_shard",
        "workers",
    }  # image_size is a run parameter, not a second (ignored) copy in the section
    assert "split_config" in constants["split"] and len(constants["split"]) == 1
    # Infrastructure never reaches a step: no image names, node selectors or secret names.
    for name in ("image_cpu", "gpu_node_selector", "s3_secret", "kaggle_secret"):
        assert name not in text, name


def test_compare_and_publish_get_the_whole_champion_policy(gpu_docs):
    """Every compare setting reaches the cluster's compare and publish tasks (not only the
    metric, which is a run knob): otherwise a cluster decides with the defaults."""
    _, docs = gpu_docs
    tasks = _spec(docs)["root"]["dag"]["tasks"]
    expected = section_dict(load_config(ROOT / "params.yaml"), "compare")
    del expected["champion_metric"]  # the run knob, a parameter of its own
    for name in ("compare", "publish"):
        params = tasks[name]["inputs"]["parameters"]
        assert params["compare_config"]["runtimeValue"]["constant"] == expected, name
        assert "componentInputParameter" in params["champion_metric"], name


# The train component's parameters that are not training knobs (epochs is a knob of its own).
TRAIN_COMPONENT_OTHERS = {"backbone", "epochs", "train_config", "run_id", "checkpoint_root"}
TRAIN_COMPONENT_OTHERS |= {"data", "model"}


def _train_signature_problems(func) -> list[str]:
    """Where `func`'s parameters differ from `fauna.knobs.TRAIN_KNOBS` (names and types),
    each said as what to change in components/train.py. KFP builds a lightweight component
    from its function's source, so the signature is typed there by hand, not generated."""
    import inspect

    where = "components/train.py's train()"
    params = inspect.signature(func).parameters
    problems = []
    for knob in TRAIN_KNOBS:
        typed = f"`{knob.name}: {knob.type.__name__}`"
        if knob.name not in params:
            problems.append(f"the training knob {knob.name!r} is missing: add {typed} to {where}")
        elif params[knob.name].annotation is not knob.type:
            problems.append(
                f"{knob.name!r} is {params[knob.name].annotation!r} in {where}, the knob a "
                f"{knob.type.__name__}: declare it {typed}"
            )
    knob_names = {knob.name for knob in TRAIN_KNOBS}
    for name in sorted(set(params) - knob_names - TRAIN_COMPONENT_OTHERS):
        problems.append(
            f"{where} takes {name!r}, which is no training knob in fauna.knobs.KNOBS: "
            "remove it, or add the knob"
        )
    return problems


def test_the_train_component_takes_each_training_knob_with_its_type():
    from fauna.components.train import train

    assert _train_signature_problems(train.python_func) == []


def test_a_train_component_out_of_step_with_the_knobs_is_told_what_to_change():
    """The check above fails with what to do: a knob missing, mistyped or left over."""

    def stale(backbone: str, epochs: int, batch_size: str, dropout: float):
        pass

    problems = "\n".join(_train_signature_problems(stale))
    assert (
        "the training knob 'learning_rate' is missing: add `learning_rate: float` to "
        "components/train.py's train()" in problems
    )
    assert "'batch_size' is <class 'str'> in components/train.py's train()" in problems
    assert "declare it `batch_size: int`" in problems
    assert "takes 'dropout', which is no training knob" in problems


def test_the_source_knobs_help_lists_the_sources_table(monkeypatch):
    """The kinds of source in the `source` knob's help (and ingest's --source) come from
    `fauna.sources.SOURCES`: every kind's example, and a kind added there is listed."""
    from fauna import sources
    from fauna.sources.base import Source

    helps = [knobs.BY_NAME["source"].help]
    parser = build_parser("ingest")
    sub = parser._subparsers._group_actions[0].choices["ingest"]
    helps += [a.help for a in sub._actions if "--source" in a.option_strings]
    for kind in sources.SOURCES:
        assert kind.example, f"{kind.kind}: say what its strings look like (Source.example)"
        assert all(kind.example in text for text in helps), kind.kind
    remote, local = knobs.BY_NAME["source"].help.split("; in local runs also ")
    assert "s3://bucket/prefix" in remote and "a folder" in local and "a folder" not in remote

    def never(_: str) -> bool:
        return False

    hf = Source("hf", never, sources.fetch, str, "hf://owner/name")  # a new kind of source
    monkeypatch.setattr(sources, "SOURCES", (*sources.SOURCES, hf))
    assert "an http(s) URL, hf://owner/name; in local runs" in sources.described()
