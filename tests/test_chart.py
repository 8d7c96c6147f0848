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

from fauna.config import Config, PipelineConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "fauna"
K8S_VERSION = "1.31.0"
NAMESPACE = "kubeflow"

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


def render(chart, values: dict | None = None) -> dict[str, str]:
    return chart.render(values or {}, name="fauna", namespace=NAMESPACE, is_install=True)


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


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "minio-serving-existing"])
def test_lint_strict(values):
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
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


@pytest.mark.parametrize("values", [{}, FULL], ids=["defaults", "full"])
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


def test_cronjob_submits_and_waits(chart):
    docs = objects(render(chart, FULL))
    cron = named(docs, "CronJob", "fauna-retrain")
    spec = cron["spec"]
    assert spec["schedule"] == "30 2 * * 1-5" and spec["timeZone"] == "Europe/Berlin"
    assert spec["concurrencyPolicy"] == "Forbid"
    assert spec["successfulJobsHistoryLimit"] == 3 and spec["failedJobsHistoryLimit"] == 3
    assert spec["jobTemplate"]["spec"]["backoffLimit"] == 1
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
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
    assert env["S3_ENDPOINT_URL"]["value"] == "http://fauna-minio.kubeflow.svc:9000"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "team-s3", "key": key}
    params_volume = next(v for v in pod["volumes"] if v["name"] == "params")
    assert params_volume["configMap"]["name"] == "fauna-params"
    token = next(v for v in pod["volumes"] if v["name"] == "kfp-token")
    assert token["projected"]["sources"][0]["serviceAccountToken"]["audience"] == (
        "pipelines.kubeflow.org"
    )


def test_submitter_rbac_is_minimal(chart):
    docs = objects(render(chart))
    role = named(docs, "Role", "fauna-submitter")
    groups = {g for rule in role["rules"] for g in rule["apiGroups"]}
    assert groups == {"pipelines.kubeflow.org"}  # nothing from the Kubernetes API itself
    verbs = {v for rule in role["rules"] for v in rule["verbs"]}
    assert verbs <= {"get", "list", "create"}
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
    ({"minio": {"enabled": "yes"}}, "enabled"),
    ({"minio": {"image": "quay.io/minio/minio"}}, "image"),  # no tag
    ({"serving": {"enabled": True, "modelName": "Fauna Model"}}, "modelName"),
    ({"image": {"pullPolicy": "Sometimes"}}, "pullPolicy"),
    ({"params": {"trian": {"head_epochs": 1}}}, "trian"),
    ({"sheduel": {}}, "sheduel"),
]


@pytest.mark.parametrize(("values", "word"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_schema_rejects_wrong_values_with_a_clear_message(chart, values, word):
    with pytest.raises(helm.HelmValuesError) as err:
        chart.validate_schema(values)
    assert word in str(err.value)
    with pytest.raises(helm.HelmError):
        render(chart, values)  # an install would stop at the same place


def test_schema_accepts_the_documented_values(chart):
    for values in ({}, FULL, GIVEN, {"minio": {"enabled": True}, **GIVEN}):
        chart.validate_schema(values)


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
    from fauna import storage

    env = {
        "CHAMPION_URI": f"s3://{s3}/models/champion/champion.json",
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
    storage.write_text(env["CHAMPION_URI"], json.dumps(pointer))

    done = run_sync(env)
    assert done.returncode == 0, done.stderr
    got = sorted(
        p.relative_to(env["MODEL_DIR"]).as_posix() for p in Path(env["MODEL_DIR"]).rglob("*.*")
    )
    assert got == ["saved_model.pb", "variables/variables.index"]
    assert "run run-7, backbone resnet50" in done.stdout
