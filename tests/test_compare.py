"""The comparison report over hand-made train/evaluate/t-SNE outputs with known metrics.

No TensorFlow here: the step outputs are written directly in their contract
shapes, so the champion and every number in the report are known in advance.
(tests/test_evaluate.py runs compare on real evaluations too.)
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fauna.config import Config
from fauna.paper import PAPER_RESULTS

CLASSES = ["antelope", "grizzly+bear", "killer+whale"]
METRICS = {
    "vgg16": {"top1": 0.61, "top3": 0.90, "macro_f1": 0.55, "weighted_f1": 0.60, "loss": 0.9},
    "resnet50": {"top1": 0.72, "top3": 0.95, "macro_f1": 0.70, "weighted_f1": 0.71, "loss": 1.1},
}


def _png(path: Path, color: tuple[int, int, int]) -> None:
    Image.new("RGB", (40, 30), color).save(path)


def make_run(root: Path, backbone: str, synthetic: bool) -> tuple[Path, Path, Path]:
    """train, evaluate and t-SNE output folders for one backbone, metrics from METRICS."""
    model, ev, ts = root / f"model-{backbone}", root / f"eval-{backbone}", root / f"tsne-{backbone}"
    source = json.dumps({"source": "folder", "name": "animals", "synthetic": synthetic})
    for d in (model, ev, ts):
        d.mkdir(parents=True)
        (d / "classes.json").write_text(json.dumps(CLASSES))
        (d / "source.json").write_text(source)
    info = {"backbone": backbone, "weights": "imagenet", "image_size": 128, "epochs_run": 7}
    info |= {"train_seconds": 3725.0, "images_per_second": 250.5}
    (model / "train_info.json").write_text(json.dumps(info))
    history = [
        {"epoch": e, "phase": "head", "loss": 2 / e, "val_loss": 2.2 / e, "accuracy": e / 8}
        for e in (1, 2, 3)
    ]
    (model / "history.json").write_text(json.dumps(history))
    _png(model / "history.png", (10, 200, 10))
    metrics = {
        "backbone": backbone,
        **METRICS[backbone],
        "roc_auc": 0.9,
        "n_test": 30,
        "averaging_note": "macro averages over the classes present in the test split",
        "most_confused": [
            {"true": "grizzly+bear", "predicted": "killer+whale", "count": 4, "rate": 0.4}
        ],
    }
    (ev / "metrics.json").write_text(json.dumps(metrics))
    _png(ev / "confusion_matrix.png", (200, 10, 10))
    with (ev / "per_class.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "precision", "recall", "f1", "support"])
        for i, c in enumerate(CLASSES):
            f1 = 0.5 + 0.1 * i + (0.2 if backbone == "resnet50" and i == 0 else 0)
            w.writerow([c, 0.5, 0.5, f1, 10])
    (ts / "tsne.json").write_text(json.dumps({"backbone": backbone, "n": 30, "perplexity": 9}))
    _png(ts / "tsne.png", (10, 10, 200))
    return model, ev, ts


def _compare(root: Path, synthetic: bool = True, cfg: Config | None = None, **kw):
    from fauna.steps.compare import compare_backbones

    runs = {b: make_run(root, b, synthetic) for b in METRICS}
    out = root / "report"
    result = compare_backbones(
        [runs["resnet50"][0], runs["vgg16"][0]],  # deliberately not in the same order
        [runs["vgg16"][1], runs["resnet50"][1]],
        [runs["resnet50"][2], runs["vgg16"][2]],
        out,
        cfg or Config(),
        **kw,
    )
    return result, out


def test_champion_and_machine_metrics(tmp_path: Path) -> None:
    result, out = _compare(tmp_path)
    assert result["champion"] == {"backbone": "resnet50", "metric": "macro_f1", "value": 0.70}
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved["backbones"]) == set(METRICS)
    assert saved["backbones"]["vgg16"]["top1"] == METRICS["vgg16"]["top1"]
    assert saved["backbones"]["vgg16"]["train_seconds"] == 3725.0
    assert saved["backbones"]["vgg16"]["images_per_second"] == 250.5
    assert saved["synthetic"] is True
    assert saved["paper"]["ResNet50"]["top1"] == pytest.approx(0.8712)


def test_champion_metric_is_configurable(tmp_path: Path) -> None:
    cfg = Config().merged({"compare": {"champion_metric": "neg_loss"}})
    result, out = _compare(tmp_path, cfg=cfg)
    assert result["champion"]["backbone"] == "vgg16"  # lowest loss
    assert result["champion"]["value"] == pytest.approx(-0.9)
    assert "lowest test loss" in (out / "report.md").read_text()


def test_report_content(tmp_path: Path) -> None:
    _, out = _compare(tmp_path)
    md = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for text in (md, page):
        assert "SYNTHETIC DATA" in text
        assert text.index("SYNTHETIC DATA") < text.index("Champion")
        for backbone in METRICS:
            assert backbone in text
        for paper in PAPER_RESULTS:  # the paper's numbers, VGG16 v1 included
            assert paper.model in text
            assert f"{100 * paper.top1:.2f}%" in text
            assert f"{paper.f1:.4f}" in text
        assert "1h 02m" in text and "250.5" in text  # training time and throughput
        assert "grizzly bear" in text  # readable class names in the confused pairs
        assert "macro-F1" in text
    # The per-class F1 table bolds the best backbone per class.
    assert re.search(r"\| antelope \|[^\n]*\*\*0\.7000\*\*", md)
    for image in ("resnet50-confusion", "vgg16-history", "vgg16-tsne"):
        assert (out / "images" / f"{image}.png").is_file()


def test_html_is_self_contained(tmp_path: Path) -> None:
    _, out = _compare(tmp_path)
    page = (out / "report.html").read_text()
    sources = re.findall(r"""<img[^>]*\bsrc=['"]([^'"]*)""", page)
    assert len(sources) == 6  # curves, confusion, t-SNE for two backbones
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""(href|src)=['"](https?:|//)""", page)
    assert "<link" not in page and "<script" not in page


def test_real_data_has_no_warning(tmp_path: Path) -> None:
    from fauna.steps.compare import compare_backbones

    runs = [make_run(tmp_path, b, synthetic=False) for b in METRICS]
    (runs[0][0] / "source.json").unlink()  # a missing source.json says nothing either way
    out = tmp_path / "report"
    result = compare_backbones(*(list(r) for r in zip(*runs, strict=True)), out, Config())
    assert result["synthetic"] is False
    assert "SYNTHETIC" not in (out / "report.md").read_text()
    assert "SYNTHETIC" not in (out / "report.html").read_text()


def test_notes_hook_rerenders(tmp_path: Path) -> None:
    from fauna.steps.compare import add_report_notes

    _, out = _compare(tmp_path, notes=["First note."])
    add_report_notes(out, ["Publishing: resnet50 was promoted to champion."])
    add_report_notes(out, ["Publishing: resnet50 was promoted to champion."])  # no repeat
    for name in ("report.md", "report.html"):
        text = (out / name).read_text()
        assert text.count("Publishing: resnet50 was promoted") == 1
        assert text.index("First note.") < text.index("Test results beside the paper")


def test_mismatched_inputs_are_clear_errors(tmp_path: Path) -> None:
    from fauna.steps.compare import CompareError, compare_backbones

    model, ev, ts = make_run(tmp_path, "vgg16", True)
    with pytest.raises(CompareError, match="two evaluate outputs"):
        compare_backbones([model], [ev, ev], [ts], tmp_path / "out", Config())
    with pytest.raises(CompareError, match="nothing to compare"):
        compare_backbones([model], [], [], tmp_path / "out", Config())
    with pytest.raises(CompareError, match="no metrics.json"):
        compare_backbones([model], [tmp_path], [], tmp_path / "out", Config())


def test_component_and_cli(tmp_path: Path, capsys) -> None:
    from kfp import dsl

    from fauna.cli import main
    from fauna.components.compare import compare

    runs = {b: make_run(tmp_path, b, True) for b in METRICS}
    report_html = dsl.HTML(uri=str(tmp_path / "html" / "report.html"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    compare.python_func(
        config_json=json.dumps(Config().to_dict()),
        models=[dsl.Model(uri=str(r[0])) for r in runs.values()],
        evaluations=[dsl.Dataset(uri=str(r[1])) for r in runs.values()],
        tsnes=[dsl.Dataset(uri=str(r[2])) for r in runs.values()],
        report=dsl.Dataset(uri=str(tmp_path / "report")),
        report_html=report_html,
        metrics=metrics,
    )
    assert "resnet50" in Path(report_html.path).read_text()
    assert metrics.metadata["champion_macro_f1"] == pytest.approx(0.70)
    assert metrics.metadata["vgg16_top1"] == pytest.approx(0.61)

    args = ["compare", "--out", str(tmp_path / "cli")]
    args += ["--models", *(str(r[0]) for r in runs.values())]
    args += ["--evaluations", *(str(r[1]) for r in runs.values())]
    args += ["--tsnes", *(str(r[2]) for r in runs.values())]
    assert main([*args, "--set", "compare.champion_metric=top3"]) == 0
    assert json.loads(capsys.readouterr().out)["backbone"] == "resnet50"


def test_component_compiles_with_list_inputs(tmp_path: Path) -> None:
    import yaml
    from kfp import compiler

    from fauna.components.compare import compare

    compiler.Compiler().compile(compare, str(tmp_path / "compare.yaml"))
    spec = yaml.safe_load((tmp_path / "compare.yaml").read_text())
    inputs = spec["root"]["inputDefinitions"]["artifacts"]
    assert inputs["models"]["isArtifactList"] is True
    assert inputs["data"]["isOptional"] is True


def test_per_class_table_with_absent_values(tmp_path: Path) -> None:
    """A backbone without t-SNE, history.png or per_class.csv still renders."""
    from fauna.steps.compare import compare_backbones

    model, ev, _ = make_run(tmp_path, "vgg16", True)
    (model / "history.png").unlink()
    (ev / "per_class.csv").unlink()
    result = compare_backbones([model], [ev], [], tmp_path / "out", Config())
    assert result["champion"]["backbone"] == "vgg16"
    assert (tmp_path / "out" / "images" / "vgg16-history.png").is_file()  # re-plotted
    assert np.isclose(result["backbones"]["vgg16"]["macro_f1"], 0.55)
