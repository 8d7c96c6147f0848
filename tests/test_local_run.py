"""The whole pipeline under kfp.local on tiny generated data, publishing to the embedded S3.

Assertions are on the published objects and the report, not on the status kfp.local
reports (local runs can report success wrongly).
"""

from __future__ import annotations

import json

import pytest

from fauna import champion, storage
from fauna.cli import main
from fauna.config import PAPER_CLASSES
from fauna.synthetic import generate

pytestmark = pytest.mark.slow


def test_local_run_end_to_end_then_predict_with_the_champion(s3, tmp_path, monkeypatch, capsys):
    classes = PAPER_CLASSES[:4]
    data = generate(tmp_path / "photos", classes, per_class=25, size_range=(70, 100), seed=3)
    monkeypatch.chdir(tmp_path)
    rc = main(
        [
            "local-run",
            "--backend",
            "embedded",
            "--data",
            str(data),
            "--backbones",
            "vgg16,resnet50",
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
    assert "backend:" not in out and out.count("champion of this run:") == 1
    # kfp.local's per-task print indentation must not outlive the run (it did, with parallel tasks)
    assert any(line.startswith("report:  ") for line in out.splitlines())

    pointer = champion.find_champion(s3)  # the champion of the run's (only) dataset
    assert pointer["backbone"] in ("vgg16", "resnet50") and pointer["synthetic"] is True
    run = f"s3://{s3}/runs/{pointer['run_id']}"
    keys = {k.removeprefix(f"runs/{pointer['run_id']}/") for k, _ in storage.list_keys(run)}
    for backbone in ("vgg16", "resnet50"):
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
    assert set(metrics["backbones"]) == {"vgg16", "resnet50"} and metrics["synthetic"] is True
    for m in metrics["backbones"].values():
        assert 0 <= m["top1"] <= m["top3"] <= 1
    html = storage.read_text(f"{run}/report/report.html")
    assert "synthetic" in html.lower() and "promoted to champion" in html
    published_classes = json.loads(storage.read_text(f"{run}/models/vgg16/classes.json"))
    assert published_classes == sorted(classes)

    # What the command printed: the summary table and where to find things.
    assert "vgg16" in out and "resnet50" in out and "macro-F1" in out
    assert f"{run}/report/report.html" in out
    assert "promoted: the first champion of dataset" in out

    image = next((data / classes[1]).glob("*.jpg"))
    assert (
        main(["predict", "--model", "champion", "--set", f"pipeline.bucket={s3}", str(image)]) == 0
    )
    predicted = capsys.readouterr().out
    assert image.name in predicted and any(c in predicted for c in classes)
