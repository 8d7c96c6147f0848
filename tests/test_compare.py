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

from fauna.config import PAPER_CLASSES, Config
from fauna.paper import PAPER_RESULTS
from fauna.step_output import mark_complete

CLASSES = ["antelope", "grizzly+bear", "killer+whale"]
METRICS = {
    "vgg16": {"top1": 0.61, "top3": 0.90, "macro_f1": 0.55, "weighted_f1": 0.60, "loss": 0.9},
    "resnet50": {"top1": 0.72, "top3": 0.95, "macro_f1": 0.70, "weighted_f1": 0.71, "loss": 1.1},
}


def separable_share(n: int, confidence: float) -> float:
    """The resolution a sign test gives at `confidence`, counted out here as the test's own
    oracle: k images, all won by one model, with 0.5^k below 1 - confidence, as a share of n."""
    k = 1
    while 0.5**k >= 1 - confidence:
        k += 1
    return k / n


N_TEST = 30


def write_predictions(ev: Path, backbone: str, num_classes: int) -> None:
    """predictions.npz that agree with METRICS' ranking, with evidence either way.

    resnet50 is right on all 30 test images, each with p(true) = 0.4; vgg16 is right on 20
    with p(true) = 0.5 and wrong on 10 (p(true) = 0.49 against 0.51): resnet50 is ahead on
    accuracy and F1 by 10 images, vgg16 on loss by 0.2 on every image.
    """
    from fauna.score.policy import Predictions

    y = np.arange(N_TEST) % num_classes
    probs = np.zeros((N_TEST, num_classes))
    rows = np.arange(N_TEST)
    if backbone == "resnet50":
        probs[:] = 0.6 / (num_classes - 1)
        probs[rows, y] = 0.4
    else:
        probs[:] = 0.5 / (num_classes - 1)
        probs[rows, y] = 0.5
        wrong = rows[rows % 3 == 2]
        probs[wrong] = 0.0
        probs[wrong, y[wrong]] = 0.49
        probs[wrong, (y[wrong] + 1) % num_classes] = 0.51
    keys = np.array([f"{i:064x}" for i in rows])
    Predictions(keys, y, probs).save(ev / "predictions.npz")


def _png(path: Path, color: tuple[int, int, int]) -> None:
    Image.new("RGB", (40, 30), color).save(path)


def make_run(
    root: Path,
    backbone: str,
    synthetic: bool,
    classes: list[str] = CLASSES,
    degenerate: str | None = None,
    tsne_skipped: str | None = None,
) -> tuple[Path, Path, Path]:
    """train, evaluate and t-SNE output folders for one backbone, metrics from METRICS.

    `degenerate` is the reason evaluate flagged the model (None: not flagged);
    `tsne_skipped` the reason t-SNE did not plot its features.
    """
    model, ev, ts = root / f"model-{backbone}", root / f"eval-{backbone}", root / f"tsne-{backbone}"
    source = json.dumps({"source": "folder", "name": "animals", "synthetic": synthetic})
    for d in (model, ev, ts):
        d.mkdir(parents=True)
        (d / "classes.json").write_text(json.dumps(classes))
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
    metrics = {  # evaluate's metrics.json shape (fauna.contracts.EvalMetrics)
        "backbone": backbone,
        "weights": "imagenet",
        "image_size": 128,
        "synthetic": synthetic,
        **METRICS[backbone],
        "roc_auc": 0.9,
        "n_test": 30,
        "averaging_note": "macro averages over the classes present in the test split",
        "most_confused": [{"true": classes[1], "predicted": classes[2], "count": 4, "rate": 0.4}],
        "degenerate": degenerate is not None,
        "degenerate_reason": degenerate,
    }
    (ev / "metrics.json").write_text(json.dumps(metrics))
    write_predictions(ev, backbone, len(classes))
    _png(ev / "confusion_matrix.png", (200, 10, 10))
    with (ev / "per_class.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["class", "precision", "recall", "f1", "support"])
        for i, c in enumerate(classes):
            f1 = 0.5 + 0.1 * (i % 4) + (0.2 if backbone == "resnet50" and i == 0 else 0)
            w.writerow([c, 0.5, 0.5, f1, 10])
    tsne_info = {"backbone": backbone, "n": 30, "perplexity": 9}
    if tsne_skipped:
        tsne_info["degenerate_reason"] = tsne_skipped
    else:
        _png(ts / "tsne.png", (10, 10, 200))
    (ts / "tsne.json").write_text(json.dumps(tsne_info))
    for d, step in ((model, "train"), (ev, "evaluate"), (ts, "tsne")):
        mark_complete(d, step)
    return model, ev, ts


def _compare(
    root: Path,
    synthetic: bool = True,
    cfg: Config | None = None,
    classes: list[str] = CLASSES,
    run_kw: dict[str, dict] | None = None,
    **kw,
):
    from fauna.steps.compare import compare_backbones

    runs = {b: make_run(root, b, synthetic, classes, **(run_kw or {}).get(b, {})) for b in METRICS}
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


def _texts(out: Path) -> tuple[str, str]:
    return (out / "report.md").read_text(), (out / "report.html").read_text()


def test_champion_and_machine_metrics(tmp_path: Path) -> None:
    result, out = _compare(tmp_path)
    conf = Config().compare.confidence  # the champion policy's, as configured
    evidence = result["champion"].pop("evidence")
    assert result["champion"] == {"backbone": "resnet50", "metric": "macro_f1", "value": 0.70}
    # resnet50 is right on the 10 images vgg16 gets wrong: ahead on evidence, said in words.
    assert evidence.startswith("resnet50 is ahead of the next best: macro-F1 better than vgg16")
    assert f"on 30 test images, with {conf:.0%} confidence" in evidence
    # Each score's uncertainty, the no-skill levels and the test size, for the report.
    assert result["chance"] == pytest.approx(1 / 3) and result["n_test"] == N_TEST
    assert result["resolution"] == pytest.approx(
        separable_share(N_TEST, Config().compare.confidence)
    )
    for b, row in result["backbones"].items():
        assert row["n_test"] == N_TEST and row["chance"] == pytest.approx(1 / 3)
        assert row["majority"] == pytest.approx(1 / 3)
        low, high = row["interval"]["low"], row["interval"]["high"]
        assert row["interval"]["confidence"] == conf
        assert 0.0 <= low <= high <= 1.0, b
    # vgg16's 20 of 30 leave room either way; resnet50 is right on every image, so every
    # resample is too (a bootstrap cannot widen a perfect score).
    vgg = result["backbones"]["vgg16"]["interval"]
    vgg_f1 = (2 / 3 + 1 + 0) / 3  # class 2 never right, class 0 half its predictions
    assert 1 / 3 < vgg["low"] < vgg_f1 < vgg["high"] < 0.9
    assert result["backbones"]["resnet50"]["interval"]["low"] > vgg["high"]
    assert (out / "predictions" / "vgg16.npz").is_file()  # for publish's paired decision
    result["champion"]["evidence"] = evidence
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(result))
    assert set(saved["backbones"]) == set(METRICS)
    assert saved["backbones"]["vgg16"]["top1"] == METRICS["vgg16"]["top1"]
    assert saved["backbones"]["vgg16"]["train_seconds"] == 3725.0
    assert saved["backbones"]["vgg16"]["images_per_second"] == 250.5
    assert saved["synthetic"] is True
    assert saved["flagged"] == {}
    assert saved["dataset"]["name"] == "animals" and saved["dataset"]["num_classes"] == 3
    assert saved["dataset"]["key"].startswith("animals-")
    assert saved["paper"] is None  # three classes: the paper's numbers do not apply


def test_champion_metric_is_configurable(tmp_path: Path) -> None:
    # neg_loss is the deprecated name of `loss`, where lower is better (the metric spec).
    cfg = Config().merged({"compare": {"champion_metric": "neg_loss"}})
    assert cfg.compare.champion_metric == "loss"
    result, out = _compare(tmp_path, cfg=cfg)
    assert result["champion"]["backbone"] == "vgg16"  # lowest loss
    assert result["champion"]["value"] == pytest.approx(0.9)
    assert "test loss better than resnet50 by 0.2" in result["champion"]["evidence"]
    assert "test loss" in (out / "report.md").read_text()


def test_report_content_beside_the_paper(tmp_path: Path) -> None:
    """On the paper's 30 classes (real photos) the paper's columns and table are shown."""
    _, out = _compare(tmp_path, synthetic=False, classes=list(PAPER_CLASSES))
    assert json.loads((out / "metrics.json").read_text())["paper"]["ResNet50"][
        "top1"
    ] == pytest.approx(0.8712)
    md, page = _texts(out)
    for text in (md, page):
        assert "SYNTHETIC DATA" not in text
        assert "Test results beside the paper" in text and "paper top-1" in text
        for backbone in METRICS:
            assert backbone in text
        for paper in PAPER_RESULTS:  # the paper's numbers, VGG16 v1 included
            assert paper.model in text
            assert f"{100 * paper.top1:.2f}%" in text
            assert f"{paper.f1:.4f}" in text
        assert "1h 02m" in text and "250.5" in text  # training time and throughput
        assert "beaver" in text  # the confused pair (bat -> beaver)
        assert "macro-F1" in text
        assert "do not apply" not in text
    assert "| bat | beaver | 4 | 40.00% |" in md
    # The per-class F1 table bolds the best backbone per class.
    assert re.search(r"\| antelope \|[^\n]*\*\*0\.7000\*\*", md)
    for image in ("resnet50-confusion", "vgg16-history", "vgg16-tsne"):
        assert (out / "images" / f"{image}.png").is_file()


def test_generated_data_under_the_paper_class_names_is_not_set_beside_the_paper(
    tmp_path: Path,
) -> None:
    """The smoke run's sample: the paper's class names, generated patterns, no paper numbers."""
    _, out = _compare(tmp_path, synthetic=True, classes=list(PAPER_CLASSES))
    assert json.loads((out / "metrics.json").read_text())["paper"] is None
    for text in _texts(out):
        assert text.index("SYNTHETIC DATA") < text.index("Champion")
        assert "generated patterns named after the paper" in text
        assert "paper top-1" not in text and "beside the paper" not in text
        for paper in PAPER_RESULTS:
            assert f"{100 * paper.top1:.2f}%" not in text


def test_other_dataset_is_named_and_the_paper_left_out(tmp_path: Path) -> None:
    """A dataset that is not the paper's 30 classes: its own name, no paper numbers."""
    _, out = _compare(tmp_path)
    for text in _texts(out):
        assert "fauna: backbone comparison: animals" in text
        assert "Data: animals" in text and "animals30" not in text
        assert "numbers do not apply here" in text
        assert "paper top-1" not in text and "paper F1" not in text
        for paper in PAPER_RESULTS:
            assert f"{100 * paper.top1:.2f}%" not in text
        assert "grizzly bear" in text  # readable class names in the confused pairs
        assert "1h 02m" in text and "250.5" in text


def test_flagged_model_is_never_champion(tmp_path: Path) -> None:
    """resnet50 scores best but predicts one class: vgg16 is champion, the top says why."""
    reason = "it predicts one class (antelope) for all 30 test images"
    result, out = _compare(tmp_path, run_kw={"resnet50": {"degenerate": reason}})
    assert result["champion"]["backbone"] == "vgg16"
    assert result["flagged"] == {"resnet50": reason}
    assert result["backbones"]["resnet50"]["degenerate"] is True
    for text in _texts(out):
        assert "Not eligible as champion" in text and reason in text
        assert text.index(reason) < text.index("Champion: vgg16") < text.index("Test results")
        assert "resnet50 (flagged)" in text
    md = (out / "report.md").read_text()
    assert "**0.7000**" not in md.split("## Training")[0]  # a flagged model is not ranked


def test_no_champion_when_every_model_is_flagged(tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    flags = {b: {"degenerate": f"{b} predicts one class"} for b in METRICS}
    result, out = _compare(tmp_path, run_kw=flags)
    assert result["champion"] is None
    assert set(result["flagged"]) == set(METRICS)
    for text in _texts(out):
        assert "NO CHAMPION" in text and "Champion:" not in text
        assert text.index("NO CHAMPION") < text.index("Test results")
    args = ["compare", "--out", str(tmp_path / "cli")]
    args += ["--models", str(tmp_path / "model-vgg16")]
    args += ["--evaluations", str(tmp_path / "eval-vgg16")]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) is None


def test_tsne_without_spread_is_explained_not_plotted(tmp_path: Path) -> None:
    why = "its penultimate-layer features are the same for every image"
    _, out = _compare(tmp_path, run_kw={"vgg16": {"tsne_skipped": why}})
    assert not (out / "images" / "vgg16-tsne.png").exists()
    assert (out / "images" / "resnet50-tsne.png").is_file()
    for text in _texts(out):
        assert f"vgg16: no t-SNE plot: {why}" in text


def test_html_is_self_contained(tmp_path: Path) -> None:
    _, out = _compare(tmp_path)
    page = (out / "report.html").read_text()
    sources = re.findall(r"""<img[^>]*\bsrc=['"]([^'"]*)""", page)
    # Two combined learning-curve charts; each backbone's own curves, confusion, t-SNE.
    assert len(sources) == 8
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"""(href|src)=['"](https?:|//)""", page)
    assert "<link" not in page and "<script" not in page


def test_html_escapes_what_it_shows(tmp_path: Path) -> None:
    """Names come from users' data: markup in them is shown, never interpreted."""
    _, out = _compare(tmp_path, classes=["<b>x</b>", "a|b", "c&d"])
    page = (out / "report.html").read_text()
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "c&amp;d" in page
    assert "a\\|b" in (out / "report.md").read_text()  # a pipe cannot break a Markdown table


def test_real_data_has_no_warning(tmp_path: Path) -> None:
    from fauna.steps.compare import compare_backbones

    runs = [make_run(tmp_path, b, synthetic=False) for b in METRICS]
    (runs[0][0] / "source.json").unlink()  # a missing source.json says nothing either way
    out = tmp_path / "report"
    result = compare_backbones(*(list(r) for r in zip(*runs, strict=True)), out, Config())
    assert result["synthetic"] is False
    assert "SYNTHETIC" not in (out / "report.md").read_text()
    assert "SYNTHETIC" not in (out / "report.html").read_text()


def test_notes_rerender_into_another_folder(tmp_path: Path) -> None:
    from fauna.report.render import rerender_with_notes

    _, out = _compare(tmp_path, notes=["First note."])
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    note = "Publishing: resnet50 was promoted to champion."
    copy = tmp_path / "published"
    rerender_with_notes(out, copy, [note, note])
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not (copy / ".fauna-output.json").exists()
    for name in ("report.md", "report.html"):
        text = (copy / name).read_text()
        assert text.count("Publishing: resnet50 was promoted") == 1
        assert text.index("First note.") < text.index("Test results")
    assert "data:image/png;base64," in (copy / "report.html").read_text()


def test_mismatched_inputs_are_clear_errors(tmp_path: Path) -> None:
    from fauna.step_output import OutputError
    from fauna.steps.compare import CompareError, compare_backbones

    model, ev, ts = make_run(tmp_path, "vgg16", True)
    with pytest.raises(CompareError, match="two evaluate outputs"):
        compare_backbones([model], [ev, ev], [ts], tmp_path / "out", Config())
    with pytest.raises(CompareError, match="nothing to compare"):
        compare_backbones([model], [], [], tmp_path / "out", Config())
    with pytest.raises(OutputError, match="--evaluations .* is the output of `fauna train`"):
        compare_backbones([model], [model], [], tmp_path / "out", Config())
    with pytest.raises(OutputError, match="not a completed step output"):
        compare_backbones([model], [tmp_path], [], tmp_path / "out", Config())
    other = make_run(tmp_path / "other", "resnet50", True, classes=["a", "b", "c", "d"])
    with pytest.raises(CompareError, match="different datasets"):
        compare_backbones([model], [ev, other[1]], [], tmp_path / "out", Config())
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_component_and_cli(tmp_path: Path, capsys) -> None:
    from kfp import dsl

    from fauna.cli import main
    from fauna.components.compare import compare

    runs = {b: make_run(tmp_path, b, True) for b in METRICS}
    report_html = dsl.HTML(uri=str(tmp_path / "html" / "report.html"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    compare.python_func(
        champion_metric="macro_f1",
        compare_config={},
        backbones=["vgg16", "resnet50"],
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
    assert main([*args, "--set", "compare.champion_metric=top1"]) == 0
    assert json.loads(capsys.readouterr().out)["backbone"] == "resnet50"
    # Top-3 of 3 classes is 1.0 for any model: no model beats no skill, none is champion.
    top3 = ["--set", "compare.champion_metric=top3", "--out", str(tmp_path / "t3")]
    assert main([*args, *top3]) == 0
    assert json.loads(capsys.readouterr().out) is None


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
