"""The Helm chart, through the real Helm library (helm-python-sdk, Helm v4): lint,
render, schema, and every rendered object against the Kubernetes schemas."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from fauna.config import Config, PipelineConfig, load_config, params_json_schema
from fauna.pipelines.kfp_objects import run_deadline_seconds

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "fauna"
K8S_VERSION = "1.31.0"
NAMESPACE = "kubeflow"
PROFILE_NAMESPACE = "kubeflow-user-example-com"  # a Kubeflow profile namespace
# Every install names an image tag (values.schema.json refuses none and `latest`).
BASE = {"image": {"tag": "0a1b2c3"}}
DIGEST_CPU = "sha256:" + "c" * 64
DIGEST_GPU = "sha256:" + "9" * 64

# A non-default set: MinIO, serving, existing secrets, a pinned image, a custom schedule.
FULL = {
    "image": {"registry": "registry.example.com/ml", "tag": "0a1b2c3"},
    "s3": {"existingSecret": "team-s3"},
    "kaggle": {"existingSecret": "team-kaggle"},
    "minio": {"enabled": True},
    "serving": {"enabled": True},
    "schedule": {"cron": "30 2 * * 1-5", "timeZone": "Europe/Berlin", "profile": "smoke"},
    "params": {"train": {"backbones": ["resnet50"]}, "preprocess": {"image_size": 96}},
}
# Sentinel credentials, so the test can find every place they appear.
GIVEN = {
    "s3": {"accessKeyId": "AKIAFAUNATESTKEY01", "secretAccessKey": "fauna-test-secret-value-01"},
    "kaggle": {"username": "fauna-test-user", "key": "fauna-test-kaggle-key-01"},
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def merged(base: dict, values: dict) -> dict:
    out = dict(base)
    for key, value in values.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = merged(out[key], value) if both else value
    return out


def render(chart, values: dict | None = None, namespace: str = NAMESPACE) -> dict[str, str]:
    values = merged(BASE, values or {})
    return chart.render(values, name="fauna", namespace=namespace, is_install=True)


def objects(rendered: dict[str, str]) -> list[dict]:
    docs = []
    for path, text in rendered.items():
        if path.endswith(".yaml"):
            docs += [d for d in yaml.safe_load_all(text) if d]
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    (found,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"] == name]
    return found


def pod_specs(docs: list[dict]) -> list[dict]:
    specs = []
    for d in docs:
        if d["kind"] in ("Deployment", "Job"):
            specs.append(d["spec"]["template"]["spec"])
        elif d["kind"] == "CronJob":
            specs.append(d["spec"]["jobTemplate"]["spec"]["template"]["spec"])
    return specs


@pytest.mark.parametrize(
    "values",
    [{}, FULL, {"seaweedfs": {"enabled": True}, **GIVEN}],  # SEAWEEDFS, defined below
    ids=["defaults", "minio-serving-existing", "seaweedfs"],
)
def test_lint_strict(values):
    report = helm.lint(CHART, merged(BASE, values), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("values", [{}, FULL, GIVEN], ids=["defaults", "full", "given-secrets"])
def test_every_object_validates_against_kubernetes(chart, values):
    docs = objects(render(chart, values))
    assert docs
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_full_set_renders_every_part(chart):
    docs = objects(render(chart, FULL))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        ["ServiceAccount", "Role", "RoleBinding", "ConfigMap", "ConfigMap", "ConfigMap"]
        + ["CronJob", "PersistentVolumeClaim", "Service", "Service", "Deployment", "Deployment"]
        + ["Job"]
    )
    assert by_kind(docs, "Secret") == []  # existing secrets: the chart creates none
    job = named(docs, "Job", "fauna-minio-bucket")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "fauna/fauna"
    minio = named(docs, "Deployment", "fauna-minio")["spec"]["template"]["spec"]["containers"][0]
    assert minio["image"].startswith("quay.io/minio/minio:RELEASE.")
    assert minio["readinessProbe"]["httpGet"]["path"] == "/minio/health/ready"
    assert minio["livenessProbe"]["httpGet"]["path"] == "/minio/health/live"
    serving = named(docs, "Deployment", "fauna-serving")["spec"]["template"]["spec"]
    assert serving["initContainers"][0]["image"] == "registry.example.com/ml/fauna-cpu:0a1b2c3"
    assert serving["containers"][0]["image"].startswith("tensorflow/serving:2.")


SEAWEEDFS = {"seaweedfs": {"enabled": True}, **GIVEN}


@pytest.mark.parametrize("values", [{}, FULL, SEAWEEDFS], ids=["defaults", "full", "seaweedfs"])
def test_pods_are_locked_down_and_bounded(chart, values):
    specs = pod_specs(objects(render(chart, values)))
    assert specs
    for spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault"
        assert spec["automountServiceAccountToken"] is False
        for container in spec.get("initContainers", []) + spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, container["name"]
            assert sc["readOnlyRootFilesystem"] is True, container["name"]
            assert sc["capabilities"]["drop"] == ["ALL"], container["name"]
            for side in ("requests", "limits"):
                assert set(container["resources"][side]) == {"cpu", "memory"}, container["name"]
            mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
            if container["name"] not in ("alias", "make-bucket"):
                assert "/tmp" in mounts, container["name"]  # scratch space on a read-only root


def cron_pod(docs: list[dict]) -> dict:
    cron = named(docs, "CronJob", "fauna-retrain")
    return cron["spec"]["jobTemplate"]["spec"]["template"]


def test_cronjob_submits_waits_and_retries_without_s3_keys(chart):
    docs = objects(render(chart, FULL))
    cron = named(docs, "CronJob", "fauna-retrain")
    spec = cron["spec"]
    assert spec["schedule"] == "30 2 * * 1-5" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    # A failed Job is never re-submitted (a whole new GPU run): fauna retries the run.
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 0
    pod = cron_pod(docs)["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/ml/fauna-cpu:0a1b2c3"
    assert container["command"] + container["args"][:4] == [
        "fauna",
        "submit",
        "--wait",
        "--config",
        "/etc/fauna/params.yaml",
    ]
    assert container["args"][-2:] == ["--profile", "smoke"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KF_PIPELINES_ENDPOINT"]["value"].startswith("http://ml-pipeline.kubeflow")
    assert env["FAUNA_REVISION"]["value"] == "0a1b2c3"  # names the pipeline version
    assert env["KF_PIPELINES_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    # Submitting talks only to the KFP API: no S3 keys in this pod.
    assert not any(n.startswith(("AWS_", "S3_")) for n in env)
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env.values())
    params_volume = next(v for v in pod["volumes"] if v["name"] == "params")
    assert params_volume["configMap"]["name"] == "fauna-params"
    token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
        "pipelines.kubeflow.org"
    )
    assert env["KF_PIPELINES_SA_TOKEN_PATH"]["value"] == (
        "/var/run/secrets/kubeflow/pipelines/token"
    )


def test_cronjob_in_a_kubeflow_profile_namespace(chart):
    """Multi-user Kubeflow: a profile namespace, Istio-injected, with its own kfp-launcher."""
    values = {
        "kfp": {"launcher": {"create": False}, "uiUrl": "https://kubeflow.example.com/pipeline"},
        "s3": {"existingSecret": "team-s3"},
    }
    docs = objects(render(chart, values, namespace=PROFILE_NAMESPACE))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # The profile controller's kfp-launcher stays as it is.
    assert [d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")] == ["fauna-params"]
    template = cron_pod(docs)
    # A sidecar would keep the Job from completing (istio/istio#11045).
    assert template["metadata"]["labels"]["sidecar.istio.io/inject"] == "false"
    pod = template["spec"]
    assert pod["automountServiceAccountToken"] is False  # no Kubernetes API token
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    # The pod's own namespace, through the downward API: the profile namespace.
    assert env["KF_PIPELINES_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.namespace"
    )
    assert env["KF_PIPELINES_UI_ENDPOINT"]["value"] == "https://kubeflow.example.com/pipeline"
    assert "FAUNA_SIDECAR_QUIT_URL" not in env
    binding = named(docs, "RoleBinding", "fauna-submitter")
    assert binding["subjects"][0]["namespace"] == PROFILE_NAMESPACE
    docs = objects(render(chart, {"kfp": {"namespace": "team-a"}}, PROFILE_NAMESPACE))
    (container,) = cron_pod(docs)["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["KF_PIPELINES_NAMESPACE"] == {"name": "KF_PIPELINES_NAMESPACE", "value": "team-a"}


def test_cronjob_keeps_the_sidecar_when_asked_and_stops_it(chart):
    """STRICT mTLS meshes need the sidecar: fauna waits for it and tells it to quit."""
    docs = objects(render(chart, {"istio": {"sidecarInjection": True}}, PROFILE_NAMESPACE))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    template = cron_pod(docs)
    assert "sidecar.istio.io/inject" not in template["metadata"]["labels"]
    config = json.loads(template["metadata"]["annotations"]["proxy.istio.io/config"])
    assert config == {"holdApplicationUntilProxyStarts": True}
    (container,) = template["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FAUNA_SIDECAR_QUIT_URL"] == "http://127.0.0.1:15020/quitquitquit"


def test_images_pinned_by_digest(chart):
    digests = {"cpu": DIGEST_CPU, "gpu": DIGEST_GPU}
    docs = objects(render(chart, {"image": {"digest": digests}}))
    (container,) = cron_pod(docs)["spec"]["containers"]
    assert container["image"] == f"ghcr.io/fauna-ml/fauna-cpu:0a1b2c3@{DIGEST_CPU}"
    text = named(docs, "ConfigMap", "fauna-params")["data"]["params.yaml"]
    assert yaml.safe_load(text)["pipeline"]["image_gpu"] == (
        f"ghcr.io/fauna-ml/fauna-gpu:0a1b2c3@{DIGEST_GPU}"
    )
    docs = objects(render(chart, {"image": {"tag": "", "digest": digests}}))
    (container,) = cron_pod(docs)["spec"]["containers"]
    assert container["image"] == f"ghcr.io/fauna-ml/fauna-cpu@{DIGEST_CPU}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FAUNA_REVISION"] == "sha256-" + "c" * 12


def test_submitter_rbac_is_minimal(chart):
    docs = objects(render(chart))
    role = named(docs, "Role", "fauna-submitter")
    groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
    assert groups == {"pipelines.kubeflow.org"}  # nothing from the Kubernetes API itself
    # The SubjectAccessReview verbs of backend/src/apiserver/common/const.go.
    rules = {r: set(rule["verbs"]) for rule in role["rules"] for r in rule["resources"]}
    assert rules == {
        "experiments": {"get", "list", "create"},
        "pipelines": {"get", "list", "create"},  # the pipeline and its versions
        "runs": {"get", "list", "create", "retry"},  # retry: re-run a failed run's tasks
    }
    binding = named(docs, "RoleBinding", "fauna-submitter")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "fauna", "namespace": NAMESPACE}
    ]


def launcher(docs: list[dict]) -> tuple[str, dict]:
    cm = named(docs, "ConfigMap", "kfp-launcher")
    return cm["data"]["defaultPipelineRoot"], yaml.safe_load(cm["data"]["providers"])


def test_kfp_launcher_points_at_minio(chart):
    root, providers = launcher(objects(render(chart, FULL)))
    assert root == "s3://fauna/pipeline-root"
    assert providers["s3"]["default"] == {
        "endpoint": "fauna-minio.kubeflow.svc:9000",
        "disableSSL": True,
        "region": "us-east-1",
        "forcePathStyle": True,
        "credentials": {
            "fromEnv": False,
            "secretRef": {
                "secretName": "team-s3",
                "accessKeyKey": "AWS_ACCESS_KEY_ID",
                "secretKeyKey": "AWS_SECRET_ACCESS_KEY",
            },
        },
    }


def test_kfp_launcher_for_aws_and_custom_endpoints(chart):
    root, providers = launcher(objects(render(chart)))
    default = providers["s3"]["default"]
    assert (default["endpoint"], default["disableSSL"], default["forcePathStyle"]) == (
        "s3.amazonaws.com",
        False,
        False,
    )
    values = {
        "s3": {"endpoint": "https://s3.example.com", "region": "eu-1", "bucket": "ml-art"},
        "kfp": {"launcher": {"pipelineRoot": "s3://ml-art/kfp/v2"}},
    }
    root, providers = launcher(objects(render(chart, values)))
    default = providers["s3"]["default"]
    assert root == "s3://ml-art/kfp/v2"
    assert (default["endpoint"], default["disableSSL"], default["forcePathStyle"]) == (
        "s3.example.com",
        False,
        True,
    )
    docs = objects(render(chart, {"kfp": {"launcher": {"create": False}}}))
    assert [d["metadata"]["name"] for d in by_kind(docs, "ConfigMap")] == ["fauna-params"]


def test_params_configmap_is_a_valid_fauna_config(chart, tmp_path):
    docs = objects(render(chart, FULL))
    text = named(docs, "ConfigMap", "fauna-params")["data"]["params.yaml"]
    path = tmp_path / "params.yaml"
    path.write_text(text)
    cfg = load_config(path)  # fauna's own validation: unknown keys or bad values raise
    assert cfg.pipeline.image_cpu == "registry.example.com/ml/fauna-cpu:0a1b2c3"
    assert cfg.pipeline.image_gpu == "registry.example.com/ml/fauna-gpu:0a1b2c3"
    assert (cfg.pipeline.s3_secret, cfg.pipeline.kaggle_secret) == ("team-s3", "team-kaggle")
    assert cfg.train.backbones == ["resnet50"] and cfg.preprocess.image_size == 96


def test_chart_defaults_agree_with_the_config(chart):
    """The chart cannot import config.py; this keeps the two from drifting apart."""
    defaults = PipelineConfig()
    text = named(objects(render(chart)), "ConfigMap", "fauna-params")["data"]["params.yaml"]
    pipeline = yaml.safe_load(text)["pipeline"]
    assert pipeline["bucket"] == defaults.bucket
    assert pipeline["s3_secret"] == defaults.s3_secret
    assert pipeline["kaggle_secret"] == defaults.kaggle_secret
    sections = set(chart.schema["properties"]["params"]["properties"])
    assert sections == {f.name for f in dataclasses.fields(Config)}


BAD_VALUES = [
    ({"schedule": {"cron": "0 0 3 * * 0"}}, "cron"),  # KFP's six-field cron
    ({"schedule": {"cron": "every sunday"}}, "cron"),
    ({"schedule": {"concurrencyPolicy": "Sometimes"}}, "concurrencyPolicy"),
    ({"schedule": {"backoffLimit": "1"}}, "backoffLimit"),
    ({"schedule": {"resources": {"limits": None}}}, "limits"),  # null deletes a key
    ({"s3": {"bucket": "Not_A_Bucket"}}, "bucket"),
    ({"s3": {"endpoint": "minio:9000"}}, "endpoint"),
    ({"s3": {"accessKeyId": "AKIAONLYHALF"}}, "secretAccessKey"),
    ({"kfp": {"launcher": {"pipelineRoot": "gs://fauna/root"}}}, "pipelineRoot"),
    ({"kfp": {"endpoint": "ml-pipeline:8888"}}, "endpoint"),
    ({"minio": {"enabled": True}}, "s3"),  # MinIO needs credentials
    ({"seaweedfs": {"enabled": True}}, "s3"),  # so does SeaweedFS
    ({"minio": {"enabled": True}, "seaweedfs": {"enabled": True}, **GIVEN}, "seaweedfs"),
    ({"schedule": {"activeDeadlineSeconds": 30}}, "activeDeadlineSeconds"),
    ({"minio": {"enabled": "yes"}}, "enabled"),
    ({"minio": {"image": "quay.io/minio/minio"}}, "image"),  # no tag
    ({"serving": {"enabled": True, "modelName": "Fauna Model"}}, "modelName"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"params": {"trian": {"head_epochs": 1}}}, "trian"),
    ({"sheduel": {}}, "sheduel"),
    ({"image": {"tag": "latest"}}, "tag"),  # mutable: KFP's cache and the version lie
    ({"image": {"tag": "LATEST"}}, "tag"),
    ({"image": {"digest": {"cpu": "sha256:abc"}}}, "cpu"),
    ({"kfp": {"namespace": "Team_A"}}, "namespace"),
    ({"kfp": {"uiUrl": "kubeflow.example.com"}}, "uiUrl"),
    ({"kfp": {"skipVersionCheck": "yes"}}, "skipVersionCheck"),
    ({"istio": {"sidecarInjection": "yes"}}, "sidecarInjection"),
    # params: the config model's own schema (fauna.config.params_json_schema)
    ({"params": {"train": {"batch_size": "big"}}}, "batch_size"),
    ({"params": {"augment": {"mode": "sideways"}}}, "mode"),
    ({"params": {"compare": {"champion_metric": "accuracy"}}}, "champion_metric"),
    ({"params": {"train": {"overrides": {"resnet50": {"bach_size": 8}}}}}, "bach_size"),
    ({"params": {"pipeline": {"run_retries": 1.5}}}, "run_retries"),
    ({"params": {"pipeline": {"use_gpu": "no"}}}, "use_gpu"),
]


@pytest.mark.parametrize(("values", "word"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_wrong_values_with_a_clear_message(chart, values, word):
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(merged(BASE, values))
    assert word in str(err.value)
    with pytest.raises(helm.HelmError):
        render(chart, values)  # an install would stop at the same place


def test_schema_accepts_the_documented_values(chart):
    digests = {"image": {"tag": "", "digest": {"cpu": DIGEST_CPU, "gpu": DIGEST_GPU}}}
    params = {"params": {"train": {"overrides": {"vgg16": None}}, "pipeline": {"train_cpu": 8}}}
    for values in ({}, FULL, GIVEN, {"minio": {"enabled": True}, **GIVEN}, digests, params):
        chart.validate_schema(merged(BASE, values))
    chart.validate_schema({})  # the chart's own defaults: the tag is its appVersion


def test_chart_params_schema_is_the_config_models():
    """values.schema.json's `params` is generated; regenerate it after a config change:
    .venv/bin/python -c 'import json, pathlib; from fauna.config import params_json_schema as f;
    p = pathlib.Path("charts/fauna/values.schema.json"); s = json.loads(p.read_text());
    s["properties"]["params"] = f(); p.write_text(json.dumps(s, indent=2) + "\\n")'
    """
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["properties"]["params"] == params_json_schema()


def test_no_secret_in_the_rendering_unless_given(chart):
    docs = objects(render(chart, FULL))
    assert by_kind(docs, "Secret") == []
    containers = [
        c for spec in pod_specs(docs) for c in spec.get("initContainers", []) + spec["containers"]
    ]
    credentials = [
        e
        for c in containers
        for e in c.get("env", [])
        if any(w in e["name"] for w in ("KEY", "SECRET", "PASSWORD", "USER"))
    ]
    assert credentials and all("secretKeyRef" in e["valueFrom"] for e in credentials)

    rendered = render(chart, {**GIVEN, "minio": {"enabled": True}})
    secrets = by_kind(objects(rendered), "Secret")
    assert {s["metadata"]["name"] for s in secrets} == {"fauna-s3", "fauna-kaggle"}
    given = [GIVEN["s3"]["accessKeyId"], GIVEN["s3"]["secretAccessKey"]]
    given += [GIVEN["kaggle"]["username"], GIVEN["kaggle"]["key"]]
    text = "\n".join(rendered.values())
    for value in given:
        assert value not in text  # never in clear text, not even in NOTES.txt
        encoded = base64.b64encode(value.encode()).decode()
        holders = [p for p, t in rendered.items() if encoded in t]
        assert holders == ["fauna/templates/secrets.yaml"], value
    decoded = {k: base64.b64decode(v).decode() for s in secrets for k, v in s["data"].items()}
    assert decoded["AWS_SECRET_ACCESS_KEY"] == GIVEN["s3"]["secretAccessKey"]
    assert decoded["KAGGLE_KEY"] == GIVEN["kaggle"]["key"]
    assert decoded["S3_ENDPOINT_URL"] == "http://fauna-minio.kubeflow.svc:9000"


def test_created_s3_secret_carries_every_key_the_pipeline_reads(chart):
    """The pipeline maps AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and S3_ENDPOINT_URL."""
    (secret,) = [
        s
        for s in by_kind(objects(render(chart, {"s3": GIVEN["s3"]})), "Secret")
        if s["metadata"]["name"] == "fauna-s3"
    ]
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert set(decoded) == {
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION",
        "S3_ENDPOINT_URL",
    }
    assert decoded["S3_ENDPOINT_URL"] == ""  # AWS S3: the storage layer's default endpoint


def test_notes_tell_what_to_do_next(chart):
    notes = render(chart)["fauna/templates/NOTES.txt"]
    assert "kubectl -n kubeflow create secret generic fauna-s3" in notes
    assert "create job --from=cronjob/fauna-retrain" in notes
    notes = render(chart, FULL)["fauna/templates/NOTES.txt"]
    assert "create secret" not in notes  # existing secrets: nothing to create
    assert "port-forward svc/fauna-serving 8501:8501" in notes


def run_sync(env: dict[str, str]) -> subprocess.CompletedProcess:
    script = CHART / "files" / "sync_champion.py"
    return subprocess.run(
        [sys.executable, str(script)], env={**os.environ, **env}, capture_output=True, text=True
    )


def test_serving_init_container_syncs_the_champion_export(s3, tmp_path):
    """The init container's script, against a real S3 endpoint (the `s3` fixture)."""
    from fauna.store import storage
    from fauna.store.champion import pointer_uri

    env = {
        "BUCKET": s3,
        "DATASET": "",
        "EXPORT_SUBPATH": "export",
        "MODEL_DIR": str(tmp_path / "models" / "fauna" / "1"),
    }
    missing = run_sync(env)
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1 and "cannot load the champion" in missing.stderr

    model_uri = f"s3://{s3}/runs/run-7/models/resnet50"
    export = tmp_path / "export"
    (export / "variables").mkdir(parents=True)
    (export / "saved_model.pb").write_bytes(b"\x08\x01")
    (export / "variables" / "variables.index").write_bytes(b"index")
    storage.upload_dir(export, f"{model_uri}/export")
    storage.write_text(f"{model_uri}/model.keras", "not part of the export")
    pointer = {"run_id": "run-7", "backbone": "resnet50", "model_uri": model_uri}
    storage.write_text(pointer_uri(s3, "zoo-0a1b2c3d"), json.dumps(pointer))
    storage.write_text(pointer_uri(s3, "birds-4e5f6a7b"), json.dumps({"model_uri": "s3://x/y"}))

    ambiguous = run_sync(env)  # two datasets have a champion: which one must be said
    assert ambiguous.returncode == 1 and "zoo-0a1b2c3d" in ambiguous.stderr

    done = run_sync({**env, "DATASET": "zoo"})
    assert done.returncode == 0, done.stderr
    got = sorted(
        p.relative_to(env["MODEL_DIR"]).as_posix() for p in Path(env["MODEL_DIR"]).rglob("*.*")
    )
    assert got == ["saved_model.pb", "variables/variables.index"]
    assert "run run-7, backbone resnet50" in done.stdout


def test_the_chart_lints_and_renders_with_its_own_defaults(chart):
    """`helm lint --strict charts/fauna` and `helm template` with no --set (issue 18.7)."""
    report = helm.lint(CHART, {}, strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report
    rendered = chart.render({}, name="fauna", namespace=NAMESPACE, is_install=True)
    docs = objects(rendered)
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    (container,) = cron_pod(docs)["spec"]["containers"]
    assert container["image"] == f"ghcr.io/fauna-ml/fauna-cpu:{app_version}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FAUNA_REVISION"] == app_version  # names the pipeline version


def _job_deadline(docs: list[dict]) -> int:
    return named(docs, "CronJob", "fauna-retrain")["spec"]["jobTemplate"]["spec"][
        "activeDeadlineSeconds"
    ]


def test_the_job_deadline_covers_the_run_and_its_retries(chart, tmp_path):
    """The CronJob must not end before the run's last retry (issue 18.5)."""
    assert _job_deadline(objects(render(chart))) == run_deadline_seconds(PipelineConfig())
    params = {"pipeline": {"train_timeout_seconds": 7200, "run_retries": 1}}
    docs = objects(render(chart, {"params": params}))
    text = named(docs, "ConfigMap", "fauna-params")["data"]["params.yaml"]
    (tmp_path / "params.yaml").write_text(text)
    cfg = load_config(tmp_path / "params.yaml")
    assert (
        _job_deadline(docs)
        == run_deadline_seconds(cfg.pipeline)
        == 2 * (7200 + 7 * 4 * 3600 + 3600)
    )
    longer = run_deadline_seconds(PipelineConfig()) + 60
    docs = objects(render(chart, {"schedule": {"activeDeadlineSeconds": longer}}))
    assert _job_deadline(docs) == longer
    with pytest.raises(helm.HelmError, match="shorter than the run may take with its retries"):
        render(chart, {"schedule": {"activeDeadlineSeconds": 172800}})  # the old 48 h


def test_pull_secrets_reach_every_pipeline_task(chart, tmp_path):
    docs = objects(render(chart, {"image": {"pullSecrets": ["regcred"]}}))
    assert cron_pod(docs)["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    text = named(docs, "ConfigMap", "fauna-params")["data"]["params.yaml"]
    (tmp_path / "params.yaml").write_text(text)
    # test_pipeline_compile.py shows this setting on every task of the compiled pipeline.
    assert load_config(tmp_path / "params.yaml").pipeline.image_pull_secrets == ["regcred"]
    text = named(objects(render(chart)), "ConfigMap", "fauna-params")["data"]["params.yaml"]
    assert "image_pull_secrets" not in text


def test_seaweedfs_as_the_bundled_store(chart):
    values = {"seaweedfs": {"enabled": True}, "s3": {"existingSecret": "team-s3"}}
    docs = objects(render(chart, values))
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert by_kind(docs, "Secret") == []
    deployment = named(docs, "Deployment", "fauna-seaweedfs")["spec"]["template"]["spec"]
    (server,) = deployment["containers"]
    assert server["image"].startswith("ghcr.io/chrislusf/seaweedfs:")
    assert "-s3.config=/config/s3.json" in server["args"]
    (identity,) = deployment["initContainers"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for e in identity["env"]}
    assert refs == {"team-s3"}  # the key pair by reference, written to a memory volume
    config = next(v for v in deployment["volumes"] if v["name"] == "config")
    assert config["emptyDir"]["medium"] == "Memory"
    job = named(docs, "Job", "fauna-seaweedfs-bucket")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in job["initContainers"][0]["env"]}
    assert env["S3_ENDPOINT_URL"] == "http://fauna-seaweedfs.kubeflow.svc:8333"
    _, providers = launcher(docs)
    assert providers["s3"]["default"]["endpoint"] == "fauna-seaweedfs.kubeflow.svc:8333"
    assert by_kind(objects(render(chart)), "Job") == []  # no store, no bucket Job
