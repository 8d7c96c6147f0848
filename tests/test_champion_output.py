"""The champion as a pipeline output: publish's `champion` Model and `champion_uri` parameter.

Run through the real publish component function on tiny trained models (test_publish's
fixtures) and the embedded S3, and checked in the compiled pipeline YAML.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_publish import data, models, reports  # noqa: F401 - fixtures
from test_publish import publish_component as _publish

from fauna.config import Config
from fauna.store import storage


@pytest.mark.training
def test_champion_output_names_the_export_after_each_decision(
    s3,
    data,  # noqa: F811
    models,  # noqa: F811
    reports,  # noqa: F811
    tmp_path,
):
    champion, uri, published = _publish(
        s3, "medium", "run-1", models, reports, data, tmp_path, git_sha="abc123def456"
    )
    export = f"s3://{s3}/runs/run-1/models/medium/export"
    assert uri == export
    meta = champion.metadata
    assert meta["export_uri"] == export and meta["decision"] == "promoted"
    assert meta["promoted"] is True and published.metadata["promoted"] is True
    assert meta["run_id"] == "run-1" and meta["decided_by_run"] == "run-1"
    assert meta["backbone"] == "medium" and meta["metric"] == "macro_f1"
    assert meta["value"] == pytest.approx(reports["medium"][1]["macro_f1"])
    assert meta["dataset"].startswith("tiny-") and meta["git_sha"] == "abc123def456"
    # The model it names is there (the train step writes its export/ beside model.keras;
    # these test models have none).
    assert storage.exists(f"{meta['model_uri']}/model.keras")
    assert json.loads(Path(champion.path).read_text()) == meta

    # A weaker run keeps the champion: the output still names it, decided by this run.
    champion, uri, published = _publish(s3, "weaker", "run-2", models, reports, data, tmp_path)
    assert uri == export and published.metadata["promoted"] is False
    meta = champion.metadata
    assert meta["decision"] == "kept" and meta["promoted"] is False
    assert meta["run_id"] == "run-1" and meta["decided_by_run"] == "run-2"


@pytest.mark.training
def test_no_champion_at_all_is_an_empty_uri(
    s3,
    data,  # noqa: F811
    models,  # noqa: F811
    reports,  # noqa: F811
    tmp_path,
):
    champion, uri, _ = _publish(s3, "flat", "run-flat", models, reports, data, tmp_path)
    assert uri == "" and champion.metadata["champion"] is False


def test_compiled_pipeline_declares_the_champion_outputs(tmp_path):
    from fauna.pipelines.cluster import compile_pipeline
    from fauna.pipelines.kfp_objects import source_revision

    spec = next(yaml.safe_load_all(compile_pipeline(Config(), tmp_path / "p.yaml").read_text()))
    outputs = spec["components"]["comp-publish"]["outputDefinitions"]
    assert outputs["artifacts"]["champion"]["artifactType"]["schemaTitle"] == "system.Model"
    assert outputs["parameters"]["champion_uri"]["parameterType"] == "STRING"
    task = spec["root"]["dag"]["tasks"]["publish"]
    revision = source_revision(Path(__file__).resolve().parents[1] / "pipelines")
    assert task["inputs"]["parameters"]["git_sha"]["runtimeValue"]["constant"] == revision
