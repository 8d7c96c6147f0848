"""The whole pipeline under kfp.local on tiny generated data, publishing to the embedded S3.

Assertions are on the published objects and the report, not on the status kfp.local
reports (local runs can report success wrongly). The run registers its models in the
Model Registry stand-in (tests/registry_standin.py, read back with the real client), and
`fauna serve` then serves its champion and follows a promotion (issue 17's "done when").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from registry_standin import StandinRegistry

from fauna.cli import main
from fauna.config import PAPER_CLASSES, Config
from fauna.data.synthetic import generate
from fauna.store import champion, registry, storage

pytestmark = pytest.mark.slow
BACKBONES = ("vgg16", "resnet50", "mobilenetv3small")  # three versions; the third is cheap


def registered(url: str, name: str) -> dict[str, tuple[Any, Any]]:
    """{version name: (ModelVersion, its ModelArtifact)} of one registered model, as the
    real `model-registry` client reads them back."""
    reg = registry.Registry(url, Config())
    try:
        client = reg.client
        assert client.get_registered_model(name) is not None, name
        return {
            v.name: (v, client.get_model_artifact(name, v.name))
            for v in client.get_model_versions(name)
        }
    finally:
        reg.close()


def check_registry(server: StandinRegistry, bucket: str, run_id: str) -> dict[str, Any]:
    """Every model of the run is a version with its export, the pointer's one the champion;
    every request the client sent was valid. Returns publish.json."""
    published = json.loads(storage.read_text(f"s3://{bucket}/runs/{run_id}/publish.json"))
    pointer = champion.read_pointer(bucket, published["dataset"]["key"])[0]
    versions = registered(server.url, published["dataset"]["name"])
    assert sorted(versions) == sorted(f"{run_id}/{b}" for b in published["model_uris"])
    for backbone, uri in published["model_uris"].items():
        version, artifact = versions[f"{run_id}/{backbone}"]
        assert artifact.uri == f"{uri}/export" and artifact.model_format_name == "tensorflow"
        assert version.custom_properties["kfp_run_id"] == run_id
        assert version.custom_properties["backbone"] == backbone
    champions = [n for n, (v, _) in versions.items() if v.custom_properties["champion"] == "true"]
    assert champions == [f"{pointer['run_id']}/{pointer['backbone']}"]
    props = versions[champions[0]][0].custom_properties
    assert props["promoted_at"] == pointer["promoted_at"]
    answers = list(zip(server.requests, server.statuses, strict=True))
    assert [(r[:2], s) for r, s in answers if s >= 400 and r[0] != "GET"] == []
    assert {s for r, s in answers if r[0] == "GET"} <= {200, 404}  # 404: "not there yet"
    return published


def promote(bucket: str, dataset_key: str, backbone: str, model_uri: str) -> dict[str, Any]:
    """Move the champion pointer to another model the way publish does (compare-and-swap,
    the move recorded in the history); returns the new pointer."""

    def decide(current: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
        assert current is not None
        new = {
            **current,
            "backbone": backbone,
            "model_uri": model_uri,
            "promoted_at": champion.now_stamp(),
            "reason": "promoted by hand (test)",
            "previous": champion.summary(current),
        }
        return {"promoted": True, "reason": new["reason"]}, new

    decision, rounds = champion.move_pointer(bucket, dataset_key, decide, lambda _: None)
    pointer = champion.read_pointer(bucket, dataset_key)[0]
    champion.record_move(bucket, dataset_key, pointer, champion.move_entry(pointer, decision, 1))
    return pointer


def predicted(model: str, bucket: str, image: Path, capsys) -> list[tuple[str, float]]:
    """`fauna predict --json` of one image: [(label, probability)] best first."""
    capsys.readouterr()
    argv = ["predict", "--model", model, "--json", "--set", f"pipeline.bucket={bucket}"]
    assert main([*argv, str(image)]) == 0
    (record,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    return [(t["label"], t["probability"]) for t in record["top"]]


def served(url: str, image: Path) -> tuple[str, list[tuple[str, float]]]:
    """(the served model's URI, [(label, probability)]) of one image over KServe V1."""
    from test_serve import NAME, request, v1_body

    status, answer = request(f"{url}/v1/models/{NAME}:predict", v1_body([image]))
    assert status == 200, answer
    return answer["model_uri"], [
        (t["label"], t["probability"]) for t in answer["predictions"][0]["top"]
    ]


def assert_same(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> None:
    assert [label for label, _ in got] == [label for label, _ in want]
    assert [p for _, p in got] == pytest.approx([p for _, p in want], rel=1e-5, abs=1e-7)


def check_serve_follows_promotion(
    server: StandinRegistry, bucket: str, published: dict[str, Any], image: Path, tmp: Path, capsys
) -> None:
    """`fauna serve` answers as `fauna predict` with the champion; a promotion of another
    model of the run (and `fauna register` marking it) changes what it serves."""
    import time

    from test_serve import serving

    key = published["dataset"]["key"]
    pointer = champion.read_pointer(bucket, key)[0]
    env = {**os.environ, "FAUNA_CACHE_DIR": str(tmp / "serve-cache")}
    with serving(env, bucket, tmp / "serve.log") as (url, process):
        uri, top = served(url, image)
        assert uri == pointer["model_uri"]
        assert_same(top, predicted("champion", bucket, image, capsys))

        other = next(b for b in sorted(published["model_uris"]) if b != pointer["backbone"])
        moved = promote(bucket, key, other, published["model_uris"][other])
        deadline = time.monotonic() + 120
        while (found := served(url, image))[0] != moved["model_uri"]:
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp / "serve.log"
            ).read_text()
            time.sleep(0.5)
        assert_same(found[1], predicted("champion", bucket, image, capsys))
        assert_same(found[1], predicted(moved["model_uri"], bucket, image, capsys))
    assert "now serving" in (tmp / "serve.log").read_text()
    # The registry follows the pointer when asked (`fauna register`, idempotent).
    capsys.readouterr()
    assert (
        main(["register", "--run", published["run_id"], "--set", f"pipeline.bucket={bucket}"]) == 0
    )
    assert json.loads(capsys.readouterr().out)["champion"] == f"{published['run_id']}/{other}"
    check_registry(server, bucket, published["run_id"])


def test_local_run_end_to_end_then_predict_with_the_champion(s3, tmp_path, monkeypatch, capsys):
    classes = PAPER_CLASSES[:4]
    data = generate(tmp_path / "photos", classes, per_class=25, size_range=(70, 100), seed=3)
    monkeypatch.chdir(tmp_path)
    with StandinRegistry() as server:
        monkeypatch.setenv(registry.URL_ENV, server.url)
        run_and_check(s3, data, classes, server, tmp_path, capsys)


def run_and_check(s3: str, data: Path, classes: list[str], server, tmp_path: Path, capsys) -> None:
    """The run with every backbone, then what it published, registered and serves."""
    rc = main(
        [
            "local-run",
            "--backend",
            "embedded",
            "--data",
            str(data),
            "--backbones",
            ",".join(BACKBONES),
            "--epochs",
            "4",
            "--image-size",
            "64",
            "--set",
            f"pipeline.bucket={s3}",
            # Knobs: a changed batch size applies to resnet50 too (its profile entry gives way).
            "--batch-size",
            "8",
            "--scratch-learning-rate",
            "0.002",
            "--parallelism",
            "1",
        ]
    )
    captured = capsys.readouterr()
    out = captured.out
    assert rc == 0, out
    # Progress through logging (stderr); the summary once on stdout.
    assert "[local] backend: embedded (requested with BACKEND)" in captured.err
    assert f"[local] model registry: {server.url}" in captured.err
    assert "backend:" not in out and out.count("champion of this run:") == 1
    # kfp.local's per-task print indentation must not outlive the run (it did, with parallel tasks)
    assert any(line.startswith("report:  ") for line in out.splitlines())

    pointer = champion.find_champion(s3)  # the champion of the run's (only) dataset
    assert pointer["backbone"] in BACKBONES and pointer["synthetic"] is True
    run = f"s3://{s3}/runs/{pointer['run_id']}"
    keys = {k.removeprefix(f"runs/{pointer['run_id']}/") for k, _ in storage.list_keys(run)}
    for backbone in BACKBONES:
        for name in (
            "model.keras",
            "classes.json",
            "preprocess.json",
            "history.json",
            "train_info.json",
            "export/1/saved_model.pb",
        ):
            assert f"models/{backbone}/{name}" in keys, (backbone, name)
    assert {"report/report.html", "report/report.md", "report/metrics.json", "publish.json"} <= keys

    metrics = json.loads(storage.read_text(f"{run}/report/metrics.json"))
    assert set(metrics["backbones"]) == set(BACKBONES) and metrics["synthetic"] is True
    for m in metrics["backbones"].values():
        assert 0 <= m["top1"] <= m["top3"] <= 1
    html = storage.read_text(f"{run}/report/report.html")
    assert "synthetic" in html.lower() and "promoted to champion" in html
    published_classes = json.loads(storage.read_text(f"{run}/models/vgg16/classes.json"))
    assert published_classes == sorted(classes)

    # What the command printed: the summary table and where to find things.
    assert all(b in out for b in BACKBONES) and "macro-F1" in out
    assert f"{run}/report/report.html" in out
    assert "promoted: the first champion of dataset" in out

    image = next((data / classes[1]).glob("*.jpg"))
    assert (
        main(["predict", "--model", "champion", "--set", f"pipeline.bucket={s3}", str(image)]) == 0
    )
    printed = capsys.readouterr().out
    assert image.name in printed and any(c in printed for c in classes)

    # The registry: three versions of the dataset's model, the pointer's one the champion.
    published = check_registry(server, s3, pointer["run_id"])
    assert sorted(published["model_uris"]) == sorted(BACKBONES)
    # `fauna serve` on the run's champion (the session's S3 server outlives the run).
    check_serve_follows_promotion(server, s3, published, image, tmp_path, capsys)
