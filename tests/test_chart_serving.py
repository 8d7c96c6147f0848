"""The chart's KServe InferenceService, rendered by the real Helm library (helm-python-sdk),
read back through the kserve SDK's own models (V1beta1InferenceService) without losing a
field, and its Secret and ServiceAccount checked against the Kubernetes schemas."""

from __future__ import annotations

import base64
import re

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from test_chart import BASE, CHART, K8S_VERSION, NAMESPACE, merged

kserve = pytest.importorskip("kserve")

GIVEN_S3 = {
    "s3": {
        "endpoint": "http://minio.kubeflow.svc:9000",
        "accessKeyId": "AKIAFAUNATESTKEY01",
        "secretAccessKey": "fauna-test-secret-value-01",
    }
}
FAUNA = merged(
    GIVEN_S3,
    {
        "inferenceService": {
            "enabled": True,
            "dataset": "animals30",
            "deploymentMode": "RawDeployment",
            "minReplicas": 2,
            "maxReplicas": 5,
        },
        "image": {"pullSecrets": ["regcred"]},
    },
)
EXPORT = "s3://fauna/runs/run-7/models/resnet50/export"
TENSORFLOW = {
    "s3": {"existingSecret": "team-s3"},
    "inferenceService": {
        "enabled": True,
        "predictor": "tensorflow",
        "storageUri": EXPORT,
        "s3": {"existingSecret": "team-kserve-s3"},
    },
}


@pytest.fixture(scope="module")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def rendered(chart, values: dict) -> list[dict]:
    out = chart.render(merged(BASE, values), name="fauna", namespace=NAMESPACE, is_install=True)
    text = out.get("fauna/templates/inferenceservice.yaml", "")
    return [d for d in yaml.safe_load_all(text) if d]


def to_model(data, klass):
    """`data` as the SDK's model `klass` (kserve models, and the Kubernetes models they use),
    the way the generated clients read an API answer; a key the model has no field for is
    an error (the SDK itself would drop it silently)."""
    import kubernetes.client.models as k8s

    if data is None or klass in ("str", "int", "float", "bool", "object"):
        return data
    if klass.startswith("list["):
        return [to_model(item, klass[5:-1]) for item in data]
    if klass.startswith("dict("):
        inner = re.match(r"dict\(([^,]*), (.*)\)", klass).group(2)
        return {key: to_model(value, inner) for key, value in data.items()}
    cls = getattr(kserve.models, klass, None) or getattr(k8s, klass)
    unknown = set(data) - set(cls.attribute_map.values())
    assert not unknown, f"{klass} has no field for {sorted(unknown)}"
    fields = {
        attr: to_model(data[key], cls.openapi_types[attr])
        for attr, key in cls.attribute_map.items()
        if key in data
    }
    return cls(**fields)


def round_trip(doc: dict) -> dict:
    isvc = to_model(doc, "V1beta1InferenceService")
    assert isinstance(isvc, kserve.V1beta1InferenceService)
    return kserve.ApiClient().sanitize_for_serialization(isvc)


def test_fauna_predictor_round_trips_through_the_kserve_models(chart):
    docs = rendered(chart, FAUNA)
    assert [d["kind"] for d in docs] == ["Secret", "ServiceAccount", "InferenceService"]
    (isvc,) = [d for d in docs if d["kind"] == "InferenceService"]
    assert round_trip(isvc) == isvc
    assert isvc["apiVersion"] == f"{kserve.constants.KSERVE_GROUP}/v1beta1"
    assert isvc["metadata"]["annotations"] == {"serving.kserve.io/deploymentMode": "RawDeployment"}
    predictor = isvc["spec"]["predictor"]
    assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 5)
    assert predictor["serviceAccountName"] == "fauna-kserve"
    assert predictor["imagePullSecrets"] == [{"name": "regcred"}]
    (container,) = predictor["containers"]
    assert container["image"] == "ghcr.io/fauna-ml/fauna-serve:0a1b2c3"
    assert container["command"] == ["fauna"]
    args = container["args"]
    assert args[:3] == ["serve", "--model", "champion:animals30"]
    assert args[args.index("--set") + 1] == "pipeline.bucket=fauna"
    assert container["readinessProbe"]["httpGet"] == {"path": "/v1/models/fauna", "port": 8080}
    assert container["resources"]["limits"] and container["resources"]["requests"]
    env = {e["name"]: e for e in container["env"]}
    assert env["S3_ENDPOINT_URL"]["value"] == "http://minio.kubeflow.svc:9000"
    ref = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "fauna-kserve-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    # Credentials only by reference: the secret value appears in the Secret alone.
    assert "fauna-test-secret-value-01" not in yaml.safe_dump(isvc)


def test_s3_access_the_kserve_way(chart):
    docs = {d["kind"]: d for d in rendered(chart, FAUNA)}
    secret, account = docs["Secret"], docs["ServiceAccount"]
    for doc in (secret, account):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert secret["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "minio.kubeflow.svc:9000",
        "serving.kserve.io/s3-usehttps": "0",
        "serving.kserve.io/s3-region": "us-east-1",
        "serving.kserve.io/s3-verifyssl": "1",
    }
    decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert decoded == {
        "AWS_ACCESS_KEY_ID": "AKIAFAUNATESTKEY01",
        "AWS_SECRET_ACCESS_KEY": "fauna-test-secret-value-01",
    }
    assert account["secrets"] == [{"name": "fauna-kserve-s3"}]
    assert account["automountServiceAccountToken"] is False


def test_tensorflow_predictor_serves_the_export_with_an_existing_secret(chart):
    docs = rendered(chart, TENSORFLOW)
    assert [d["kind"] for d in docs] == ["ServiceAccount", "InferenceService"]
    assert docs[0]["secrets"] == [{"name": "team-kserve-s3"}]
    isvc = docs[1]
    assert round_trip(isvc) == isvc
    predictor = isvc["spec"]["predictor"]
    assert "containers" not in predictor and "annotations" not in isvc["metadata"]
    assert predictor["model"]["modelFormat"] == {"name": "tensorflow"}
    assert predictor["model"]["storageUri"] == EXPORT


def test_a_lost_field_is_caught(chart):
    """The round trip is a real check: a field the models do not know fails it."""
    (isvc,) = [d for d in rendered(chart, FAUNA) if d["kind"] == "InferenceService"]
    isvc["spec"]["predictor"]["minReplica"] = 1  # a typo the SDK would drop
    with pytest.raises(AssertionError, match="minReplica"):
        round_trip(isvc)


@pytest.mark.parametrize(
    "values, word",
    [
        ({"inferenceService": {"enabled": True}}, "existingSecret"),  # no credentials at all
        (
            {**GIVEN_S3, "inferenceService": {"enabled": True, "predictor": "tensorflow"}},
            "storageUri",
        ),
    ],
)
def test_what_cannot_work_is_refused_in_one_line(chart, values, word):
    with pytest.raises(Exception, match=word) as refused:
        chart.render(merged(BASE, values), name="fauna", namespace=NAMESPACE, is_install=True)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "values, word",
    [
        ({"inferenceService": {"enabled": True, "predictor": "onnx"}}, "predictor"),
        ({"inferenceService": {"enabled": True, "modelName": "Fauna Model"}}, "modelName"),
        ({"inferenceService": {"enabled": True, "maxReplicas": 0}}, "maxReplicas"),
        ({"inferenceService": {"enabled": True, "deploymentMode": "Knative"}}, "deploymentMode"),
    ],
)
def test_schema_refuses_wrong_values(chart, values, word):
    with pytest.raises(Exception, match=word):
        chart.validate_schema(merged(BASE, values))


def test_lint_strict_with_the_inference_service():
    report = helm.lint(CHART, merged(BASE, FAUNA), strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


def test_the_serving_image_is_pinned_by_its_own_digest(chart):
    """`make image` builds fauna-serve beside fauna-cpu/-gpu; image.digest.serve pins it."""
    digest = "sha256:" + "5" * 64
    values = merged(FAUNA, {"image": {"digest": {"serve": digest}}})
    (isvc,) = [d for d in rendered(chart, values) if d["kind"] == "InferenceService"]
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["image"] == f"ghcr.io/fauna-ml/fauna-serve:0a1b2c3@{digest}"
