"""The documents steps hand each other (fauna.contracts): old files read and write back
byte for byte, a damaged one is one line naming the file and the key, names live once."""

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from fauna.contracts import (
    Comparison,
    ContractError,
    EvalMetrics,
    PublishResult,
    TrainInfo,
    load_document,
)
from fauna.data.dataset import write_json

ROOT = Path(__file__).resolve().parents[1]

# Documents as the code before fauna.contracts wrote them (dict literals in
# steps/evaluate.py, training/deliverables.py, report/decision.py, steps/publish.py),
# trimmed to a few keys of each nested part.
OLD_EVAL = {
    "backbone": "vgg16",
    "weights": "imagenet",
    "image_size": 128,
    "synthetic": False,
    "n_test": 30,
    "num_classes": 3,
    "loss": 0.91,
    "top1": 0.6,
    "top3": 0.9,
    "macro_f1": 0.55,
    "weighted_f1": 0.56,
    "roc_auc": None,
    "roc_auc_classes": 0,
    "classes_absent_from_test": [],
    "averaging_note": "macro averages and ROC-AUC are over the classes present (all present)",
    "confused_pairs_mode": "directed (true -> predicted)",
    "most_confused": [{"true": "cat", "predicted": "dog", "count": 4, "rate": 0.4}],
    "prediction_diversity": {"distinct_true": 3, "distinct_predicted": 3},
    "degenerate": False,
    "degenerate_reason": None,
}
OLD_TRAIN_INFO = {
    "backbone": "vgg16",
    "weights": "imagenet",
    "image_size": 128,
    "num_classes": 3,
    "epochs_run": 7,
    "train_seconds": 3725.0,
    "images_per_second": 250.5,
    "best_epoch": 5,
    "weights_from_epoch": 5,
    "runs": 1,
    "synthetic": False,
    "recipe": {"name": "pretrained", "batchnorm_recalibrated_batches": 0},
    "settings": {"seed": 42, "augment": None},
    "finished_at": "2026-12-01T10:00:00+00:00",
}
OLD_COMPARISON = {
    "champion": {"backbone": "vgg16", "metric": "macro_f1", "value": 0.55, "evidence": "alone"},
    "metric": "macro_f1",
    "chance": 0.3333333333333333,
    "n_test": 30,
    "resolution": 0.03333333333333333,
    "dataset": {"key": "animals-3c-0123abcd", "name": "animals"},
    "flagged": {"resnet50": "it predicts one class for every test image"},
    "backbones": {"vgg16": {"top1": 0.6, "macro_f1": 0.55, "degenerate": False}},
    "synthetic": False,
    "paper": None,
}
OLD_PUBLISH = {
    "run_id": "run-1",
    "run_uri": "s3://fauna/runs/run-1",
    "report_uri": "s3://fauna/runs/run-1/report",
    "model_uris": {"vgg16": "s3://fauna/runs/run-1/models/vgg16"},
    "champion_uri": "s3://fauna/champions/animals-3c-0123abcd.json",
    "dataset": {"key": "animals-3c-0123abcd", "name": "animals"},
    "promotion": {
        "promoted": True,
        "reason": "no champion yet",
        "metric": "macro_f1",
        "candidate_value": 0.55,
        "champion_value": None,
        "already_champion": False,
    },
}


@pytest.mark.parametrize(
    ("contract", "old"),
    [
        (EvalMetrics, OLD_EVAL),
        (TrainInfo, OLD_TRAIN_INFO),
        (Comparison, OLD_COMPARISON),
        (PublishResult, OLD_PUBLISH),
    ],
)
def test_a_document_written_by_the_previous_code_reads_and_writes_back_byte_for_byte(
    tmp_path, contract, old
):
    before = tmp_path / "before" / contract.FILE
    write_json(before, old)
    doc = contract.read(before.parent)
    after = tmp_path / "after" / contract.FILE
    write_json(after, doc.to_json())
    assert after.read_bytes() == before.read_bytes()


@pytest.mark.parametrize("contract", [EvalMetrics, TrainInfo, Comparison])
def test_each_typed_key_is_a_field_in_the_written_order(contract):
    names = [f.name for f in dataclasses.fields(contract) if f.name != "rest"]
    assert list(contract.TYPES) == names


def test_typed_fields_of_an_old_document():
    ev = EvalMetrics.from_json(OLD_EVAL)
    assert (ev.backbone, ev.image_size, ev.n_test, ev.degenerate) == ("vgg16", 128, 30, False)
    assert ev.score("macro_f1") == 0.55 and ev.score("roc_auc") is None
    comparison = Comparison.from_json(OLD_COMPARISON)
    assert comparison.champion["backbone"] == "vgg16"
    assert comparison.flagged == {"resnet50": "it predicts one class for every test image"}
    published = PublishResult.from_json(OLD_PUBLISH)
    assert published.promotion.promoted is True
    assert published.model_uris["vgg16"].endswith("/models/vgg16")
    assert TrainInfo.from_json(OLD_TRAIN_INFO).rest["epochs_run"] == 7


@pytest.mark.parametrize(
    ("contract", "old", "change", "message"),
    [
        (EvalMetrics, OLD_EVAL, {"backbone": None}, "'backbone' must be a string, got None"),
        (EvalMetrics, OLD_EVAL, {"image_size": "128"}, "'image_size' must be a number"),
        (EvalMetrics, OLD_EVAL, {"n_test": True}, "'n_test' must be a number, got True"),
        (TrainInfo, OLD_TRAIN_INFO, {"image_size": 12.5}, "'image_size' must be a number"),
        (Comparison, OLD_COMPARISON, {"backbones": []}, "'backbones' must be an object"),
        (PublishResult, OLD_PUBLISH, {"promotion": {}}, "promotion has no 'promoted'"),
    ],
)
def test_a_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, contract, old, change, message):
    write_json(tmp_path / contract.FILE, old | change)
    with pytest.raises(ContractError) as err:
        contract.read(tmp_path)
    assert str(tmp_path / contract.FILE) in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("key", ["backbone", "weights", "image_size", "n_test", "degenerate"])
def test_a_missing_key_is_one_line_not_a_key_error(tmp_path, key):
    write_json(tmp_path / EvalMetrics.FILE, {k: v for k, v in OLD_EVAL.items() if k != key})
    with pytest.raises(ContractError, match=f"metrics.json has no '{key}'"):
        EvalMetrics.read(tmp_path)


def test_a_missing_damaged_or_foreign_file_is_one_line(tmp_path):
    with pytest.raises(ContractError, match="missing publish.json in .*: is this the right step"):
        PublishResult.read(tmp_path)
    (tmp_path / "publish.json").write_text('{"run_id": ')
    with pytest.raises(ContractError, match="publish.json is not valid JSON"):
        load_document(tmp_path / "publish.json")
    (tmp_path / "publish.json").write_text("[1, 2]")
    with pytest.raises(ContractError, match="must hold a JSON object, not list"):
        PublishResult.read(tmp_path)


def test_compare_refuses_an_evaluation_without_its_backbone_in_one_line(tmp_path):
    """The reader the comparison uses: a damaged metrics.json is named, not a KeyError."""
    from fauna.report.gather import gather
    from fauna.step_output import mark_complete

    ev = tmp_path / "eval-vgg16"
    write_json(ev / EvalMetrics.FILE, {k: v for k, v in OLD_EVAL.items() if k != "backbone"})
    mark_complete(ev, "evaluate")
    with pytest.raises(ContractError, match=r"eval-vgg16/metrics.json has no 'backbone'"):
        gather([], [ev], [])


def test_model_info_checks_a_damaged_train_info(tmp_path):
    from fauna.model.artifact import model_backbone, model_info

    assert model_info(tmp_path / "resnet50") == {"backbone": "resnet50"}  # none: a stand-in
    assert model_backbone(tmp_path / "resnet50") == "resnet50"
    write_json(tmp_path / "train_info.json", OLD_TRAIN_INFO)
    assert model_backbone(tmp_path) == "vgg16"
    write_json(tmp_path / "train_info.json", OLD_TRAIN_INFO | {"backbone": 16})
    with pytest.raises(ContractError, match="train_info.json: 'backbone' must be a string"):
        model_info(tmp_path)


def test_fauna_prints_a_damaged_document_as_one_line(tmp_path):
    """What a user sees: `fauna compare` over a damaged evaluation exits 2, one line."""
    from fauna.step_output import mark_complete

    model, ev = tmp_path / "model", tmp_path / "eval"
    write_json(model / TrainInfo.FILE, OLD_TRAIN_INFO)
    mark_complete(model, "train")
    write_json(ev / EvalMetrics.FILE, OLD_EVAL | {"degenerate": "no"})
    mark_complete(ev, "evaluate")
    result = subprocess.run(
        [sys.executable, "-m", "fauna.cli", "compare", "--models", str(model),
         "--evaluations", str(ev), "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "'degenerate' must be true/false, got 'no'" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------ names defined once

ONCE = {
    "DATA_STEPS",
    "PREPROCESS_MODES",
    "EVAL_METRICS",
    "COMPARISON",
    "TRAIN_INFO",
    "PUBLISH_JSON",
}
DOCUMENT_FILES = {"metrics.json", "train_info.json", "publish.json"}


def _sources() -> list[Path]:
    return [p for d in ("src", "pipelines", "components") for p in (ROOT / d).rglob("*.py")]


def test_shared_names_are_assigned_only_in_contracts():
    """DATA_STEPS was defined in five steps and METRICS named two documents: never again."""
    found = []
    for path in _sources():
        if path.name == "contracts.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else []
            for target in targets:
                if isinstance(target, ast.Name) and target.id in ONCE | {"METRICS"}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {target.id}")
    assert found == []


def test_document_file_names_are_spelled_only_in_contracts():
    """A string constant "metrics.json" (not in a docstring or help text) outside contracts
    would be a second definition of where a document lives."""
    found = []
    for path in _sources():
        if path.name == "contracts.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in DOCUMENT_FILES
                and id(node) not in docstrings
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []


def test_the_config_accepts_exactly_the_preprocess_modes():
    """pydantic's Literal spells the modes for the schema; they must be contracts' list."""
    import typing

    from fauna.config import PreprocessConfig
    from fauna.contracts import DEFAULT_PREPROCESS_MODE, PREPROCESS_MODES

    mode = typing.get_type_hints(PreprocessConfig)["mode"]
    assert typing.get_args(mode) == PREPROCESS_MODES
    assert PreprocessConfig().mode == DEFAULT_PREPROCESS_MODE
