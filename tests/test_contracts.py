"""The documents steps hand each other (fauna.contracts): old files (no schema_version)
read and write back key for key, value for value, with the version added; a damaged or
too new one is one line naming the file and the key; names live once."""

import ast
import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from fauna.contracts import (
    AugmentInfo,
    Classes,
    Comparison,
    ContractError,
    EvalMetrics,
    History,
    PreprocessInfo,
    PublishResult,
    SourceInfo,
    SplitInfo,
    TrainInfo,
    load_document,
)
from fauna.data.dataset import write_json

ROOT = Path(__file__).resolve().parents[1]

# Documents as the code before fauna.contracts wrote them (dict literals in
# steps/evaluate.py, training/deliverables.py, report/decision.py, steps/publish.py,
# steps/ingest.py, steps/preprocess.py, steps/split.py, steps/augment.py), trimmed to a
# few keys of each nested part; none has a schema_version (they are version 1).
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
OLD_CLASSES = ["cat", "dog", "german+shepherd"]
OLD_SOURCE = {
    "source": "/data/animals",
    "name": "animals",
    "synthetic": False,
    "version": "v-0123abcd",
    "content": "4f1c0e",
    "max_image_pixels": 89478485,
}
OLD_PREPROCESS = {
    "image_size": 128,
    "mode": "crop",
    "filter": "lanczos",
    "jpeg_quality": 95,
    "images_per_shard": 512,
    "count": 30,
}
OLD_SPLIT = {
    "seed": 42,
    "test_fraction": 0.15,
    "val_fraction": 0.1,
    "totals": {"in": 16, "train": 11, "val": 2, "test": 3, "reconciles": True},
    "fractions": {"train": 0.6875, "val": 0.125, "test": 0.1875},
    "per_class": {"cat": {"train": 7, "val": 1, "test": 2, "total": 10}},
    "duplicates": {"groups": 0, "images_in_groups": 0, "cross_class_groups": 0},
    "shards": {"train": 1, "val": 1, "test": 1},
    "images_per_shard": 16,
    "notes": [],
}
OLD_AUGMENT = {
    "mode": "oversample",
    "horizontal_flip": True,
    "rotation": 0.1,
    "zoom": 0.1,
    "translation": 0.1,
    "contrast": 0.1,
    "target_count": 0,
    "seed": 42,
    "train_time_augmentation": True,
    "oversample_target": 7,
    "per_class": {"dog": {"before": 4, "after": 7, "added": 3}},
    "copies_added": 3,
    "totals": {"train_before": 11, "train_after": 14, "val": 2, "test": 3},
    "validation_and_test": "unchanged (never augmented)",
    "notes": [],
}
OLD_HISTORY = [
    {"epoch": 0, "phase": "head", "lr": 0.001, "loss": 1.2, "accuracy": 0.4, "val_loss": 1.1,
     "val_accuracy": 0.5, "train_seconds": 3.5, "images": 120},
    {"epoch": 1, "phase": "fine_tune", "lr": 1e-05, "loss": 0.8, "accuracy": 0.7,
     "val_loss": 0.9, "val_accuracy": 0.6, "train_seconds": 4.0, "images": 120},
]  # fmt: skip

OBJECT_DOCUMENTS = [
    (EvalMetrics, OLD_EVAL),
    (TrainInfo, OLD_TRAIN_INFO),
    (Comparison, OLD_COMPARISON),
    (PublishResult, OLD_PUBLISH),
    (SourceInfo, OLD_SOURCE),
    (PreprocessInfo, OLD_PREPROCESS),
    (SplitInfo, OLD_SPLIT),
    (AugmentInfo, OLD_AUGMENT),
]
LIST_DOCUMENTS = [(Classes, OLD_CLASSES), (History, OLD_HISTORY)]
EVERY_DOCUMENT = OBJECT_DOCUMENTS + LIST_DOCUMENTS


def _ids(cases):
    return [contract.__name__ for contract, _ in cases]


@pytest.mark.parametrize(("contract", "old"), OBJECT_DOCUMENTS, ids=_ids(OBJECT_DOCUMENTS))
def test_an_old_document_reads_and_writes_back_the_same_with_its_version_first(
    tmp_path, contract, old
):
    """Every key, value and its order as before; `schema_version` is the one addition."""
    write_json(tmp_path / "before" / contract.FILE, old)
    written = contract.read(tmp_path / "before").write(tmp_path / "after")
    write_json(tmp_path / "expected" / contract.FILE, {"schema_version": 1, **old})
    assert written.read_bytes() == (tmp_path / "expected" / contract.FILE).read_bytes()


@pytest.mark.parametrize(("contract", "old"), LIST_DOCUMENTS, ids=_ids(LIST_DOCUMENTS))
def test_an_old_list_document_writes_back_byte_for_byte(tmp_path, contract, old):
    """classes.json and history.json are JSON lists: their shape is version 1."""
    write_json(tmp_path / "before" / contract.FILE, old)
    written = contract.read(tmp_path / "before").write(tmp_path / "after")
    assert written.read_bytes() == (tmp_path / "before" / contract.FILE).read_bytes()


@pytest.mark.parametrize(("contract", "old"), EVERY_DOCUMENT, ids=_ids(EVERY_DOCUMENT))
def test_each_document_round_trips(tmp_path, contract, old):
    doc = contract.from_json(old)
    doc.write(tmp_path)
    again = contract.read(tmp_path)
    assert again == doc and contract.from_json(doc.to_json()) == doc
    if isinstance(old, dict):
        assert "schema_version" not in getattr(again, "rest", {})


@pytest.mark.parametrize(("contract", "old"), EVERY_DOCUMENT, ids=_ids(EVERY_DOCUMENT))
def test_a_document_newer_than_this_fauna_is_refused_in_one_line(tmp_path, contract, old):
    """An object gets a key; a list document's next version is an object holding it."""
    newer = (old if isinstance(old, dict) else {"items": old}) | {"schema_version": 3}
    write_json(tmp_path / contract.FILE, newer)
    with pytest.raises(ContractError) as err:
        contract.read(tmp_path)
    where = tmp_path / contract.FILE
    assert str(err.value) == (
        f"{where}: schema_version 3 is newer than this fauna reads (1): upgrade fauna"
    )


@pytest.mark.parametrize("version", [True, "2", 0, 1.5])
def test_a_schema_version_that_is_not_a_version_is_refused(tmp_path, version):
    write_json(tmp_path / PreprocessInfo.FILE, OLD_PREPROCESS | {"schema_version": version})
    with pytest.raises(ContractError, match=r"preprocess.json: 'schema_version' must be"):
        PreprocessInfo.read(tmp_path)


def test_a_current_version_reads(tmp_path):
    write_json(tmp_path / SplitInfo.FILE, {"schema_version": 1, **OLD_SPLIT})
    assert SplitInfo.read(tmp_path).images_per_shard == 16


@pytest.mark.parametrize(
    "contract", [EvalMetrics, TrainInfo, Comparison, PreprocessInfo, SplitInfo]
)
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
    source = SourceInfo.from_json(OLD_SOURCE)
    assert (source.synthetic, source.name, source.content) == (False, "animals", "4f1c0e")
    assert SourceInfo().synthetic is True  # nothing says real: synthetic
    pre = PreprocessInfo.from_json(OLD_PREPROCESS)
    assert (pre.image_size, pre.mode("stretch"), pre.jpeg_quality) == (128, "crop", 95)
    assert PreprocessInfo.from_json({"image_size": 64}).mode("crop") == "crop"
    assert AugmentInfo.from_json(OLD_AUGMENT).train_time_augmentation is True
    assert SplitInfo.from_json(OLD_SPLIT).shards == {"train": 1, "val": 1, "test": 1}
    assert Classes.from_json(OLD_CLASSES).names == ("cat", "dog", "german+shepherd")
    history = History.from_json(OLD_HISTORY)
    assert history.entry(0)["phase"] == "head" and history.entry(None)["epoch"] == 1
    assert History.from_json([]).entry(0) is None


@pytest.mark.parametrize(
    ("contract", "old", "change", "message"),
    [
        (EvalMetrics, OLD_EVAL, {"backbone": None}, "'backbone' must be a string, got None"),
        (EvalMetrics, OLD_EVAL, {"image_size": "128"}, "'image_size' must be a number"),
        (EvalMetrics, OLD_EVAL, {"n_test": True}, "'n_test' must be a number, got True"),
        (TrainInfo, OLD_TRAIN_INFO, {"image_size": 12.5}, "'image_size' must be a number"),
        (Comparison, OLD_COMPARISON, {"backbones": []}, "'backbones' must be an object"),
        (PublishResult, OLD_PUBLISH, {"promotion": {}}, "promotion has no 'promoted'"),
        (SourceInfo, OLD_SOURCE, {"synthetic": "no"}, "'synthetic' must be true/false"),
        (SourceInfo, OLD_SOURCE, {"max_image_pixels": "9e7"}, "'max_image_pixels' must be a"),
        (PreprocessInfo, OLD_PREPROCESS, {"image_size": None}, "'image_size' must be a number"),
        (PreprocessInfo, OLD_PREPROCESS, {"jpeg_quality": 9.5}, "'jpeg_quality' must be a num"),
        (SplitInfo, OLD_SPLIT, {"seed": "42"}, "'seed' must be a number, got '42'"),
        (SplitInfo, OLD_SPLIT, {"notes": "none"}, "'notes' must be a list"),
        (AugmentInfo, OLD_AUGMENT, {"train_time_augmentation": 1}, "must be true/false, got 1"),
        (AugmentInfo, OLD_AUGMENT, {"mode": None}, "'mode' must be a string, got None"),
    ],
)
def test_a_wrong_type_is_one_line_naming_the_file_and_key(tmp_path, contract, old, change, message):
    write_json(tmp_path / contract.FILE, old | change)
    with pytest.raises(ContractError) as err:
        contract.read(tmp_path)
    assert str(tmp_path / contract.FILE) in str(err.value)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("contract", "old", "key"),
    [
        *[(EvalMetrics, OLD_EVAL, k) for k in ("backbone", "weights", "image_size", "n_test")],
        (EvalMetrics, OLD_EVAL, "degenerate"),
        (PreprocessInfo, OLD_PREPROCESS, "image_size"),
        (SplitInfo, OLD_SPLIT, "images_per_shard"),
        (SplitInfo, OLD_SPLIT, "totals"),
        (AugmentInfo, OLD_AUGMENT, "train_time_augmentation"),
    ],
)
def test_a_missing_key_is_one_line_not_a_key_error(tmp_path, contract, old, key):
    write_json(tmp_path / contract.FILE, {k: v for k, v in old.items() if k != key})
    with pytest.raises(ContractError) as err:
        contract.read(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / contract.FILE} has no '{key}'")
    assert "\n" not in str(err.value)


def test_keys_older_data_lacks_are_optional_but_checked_when_there():
    """Hand-made and older source.json/preprocess.json lack some keys: none is required
    in source.json (each reader has its default), image_size is in preprocess.json."""
    assert SourceInfo.from_json({"name": "bears", "synthetic": True}).version is None
    assert PreprocessInfo.from_json({"image_size": 32, "mode": "crop"}).jpeg_quality is None
    assert (
        AugmentInfo.from_json({"train_time_augmentation": False}).train_time_augmentation is False
    )


@pytest.mark.parametrize(
    ("contract", "doc", "message"),
    [
        (Classes, ["cat", 3], "classes.json: entry 1 must be a string, got 3"),
        (Classes, ["cat", "dog", "cat"], "classes.json lists 'cat' more than once"),
        (Classes, {"names": ["cat"]}, "classes.json must hold a JSON list, not dict"),
        (History, [{"epoch": 0}, {"loss": 1.0}], "history.json entry 1 has no 'epoch'"),
        (History, [{"epoch": "0"}], "history.json entry 0: 'epoch' must be a number"),
        (History, [[0, 1.0]], "history.json: entry 0 must be an object, got [0, 1.0]"),
        (History, "[]", "history.json must hold a JSON list, not str"),
    ],
)
def test_a_damaged_list_document_is_one_line_naming_the_entry(tmp_path, contract, doc, message):
    write_json(tmp_path / contract.FILE, doc)
    with pytest.raises(ContractError) as err:
        contract.read(tmp_path)
    assert str(err.value).startswith(f"{tmp_path}/{message}")
    assert "\n" not in str(err.value)


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


def _fauna(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fauna.cli", *args], capture_output=True, text=True, timeout=180
    )


def test_fauna_refuses_an_evaluation_from_a_newer_fauna_in_one_line(tmp_path):
    from fauna.step_output import mark_complete

    model, ev = tmp_path / "model", tmp_path / "eval"
    write_json(model / TrainInfo.FILE, OLD_TRAIN_INFO)
    mark_complete(model, "train")
    write_json(ev / EvalMetrics.FILE, {"schema_version": 3, **OLD_EVAL})
    mark_complete(ev, "evaluate")
    result = _fauna("compare", "--models", str(model), "--evaluations", str(ev),
                    "--out", str(tmp_path / "report"))  # fmt: skip
    assert result.returncode == 2, result.stderr
    expected = f"{ev}/metrics.json: schema_version 3 is newer than this fauna reads (1)"
    assert expected + ": upgrade fauna" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "report").exists()


def test_the_data_steps_write_versioned_documents_the_next_step_reads(tmp_path):
    """split and augment through the CLI: what each writes carries its version and reads
    back typed; a damaged classes.json or a too-new split.json stops the next step."""
    import json

    from datagen import make_preprocessed

    pre = make_preprocessed(tmp_path / "pre", ["cat", "dog"], [10, 6])
    assert "schema_version" not in (pre / "preprocess.json").read_text()  # as before: v1
    split, augmented = tmp_path / "split", tmp_path / "augmented"
    assert _fauna("split", "--data", str(pre), "--out", str(split)).returncode == 0
    result = _fauna("augment", "--data", str(split), "--out", str(augmented),
                    "--mode", "oversample")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((split / "split.json").read_text())["schema_version"] == 1
    info = AugmentInfo.read(augmented)
    assert info.to_json()["schema_version"] == 1 and info.rest["copies_added"] == 3
    assert SplitInfo.read(augmented).totals["in"] == 16  # carried forward
    assert Classes.read(augmented).names == ("cat", "dog")

    write_json(split / "split.json", {**json.loads((split / "split.json").read_text()),
                                      "schema_version": 2})  # fmt: skip
    result = _fauna("augment", "--data", str(split), "--out", str(tmp_path / "a2"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{split}/split.json: schema_version 2 is newer than this fauna reads (1)" in (
        result.stderr
    )
    write_json(pre / "classes.json", ["cat", None])
    result = _fauna("split", "--data", str(pre), "--out", str(tmp_path / "s2"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{pre}/classes.json: entry 1 must be a string, got None" in result.stderr


# ------------------------------------------------------------------ names defined once

ONCE = {
    "DATA_STEPS",
    "PREPROCESS_MODES",
    "EVAL_METRICS",
    "COMPARISON",
    "TRAIN_INFO",
    "PUBLISH_JSON",
    "HISTORY_JSON",
    "CLASSES",
    "PREPROCESS_INFO",
    "SPLIT_INFO",
    "AUGMENT_INFO",
}
DOCUMENT_FILES = {
    "metrics.json",
    "train_info.json",
    "publish.json",
    "history.json",
    "classes.json",
    "source.json",
    "preprocess.json",
    "split.json",
    "augment.json",
}
CONTRACTS = ROOT / "src" / "fauna" / "contracts"


def _sources() -> list[Path]:
    return [p for d in ("src", "pipelines", "components") for p in (ROOT / d).rglob("*.py")]


def test_shared_names_are_assigned_only_in_contracts():
    """DATA_STEPS was defined in five steps and METRICS named two documents: never again."""
    found = []
    for path in _sources():
        if path.is_relative_to(CONTRACTS):
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
        if path.is_relative_to(CONTRACTS):
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


def test_contracts_import_only_the_standard_library_and_fauna_errors():
    """Every layer (steps, serving, the registry) reads these documents: no dependency."""
    found = []
    for path in sorted(CONTRACTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                own = name == "fauna.errors" or name.startswith("fauna.contracts")
                if not own and name.split(".")[0] not in sys.stdlib_module_names | {"__future__"}:
                    found.append(f"{path.name}: {name}")
    assert found == []
