"""evaluate + t-SNE on a tiny real Keras model trained on generated shards.

The dataset and model follow the train step's contracts (shards, classes.json,
source.json, preprocess.json; model.keras with "embedding" and "predictions"
layers, history.json, train_info.json), built here so these tests do not depend
on the train step.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fauna.config import Config, EvaluateConfig, TsneConfig
from fauna.data.records import Record, ShardWriter, iter_records
from fauna.data.synthetic import class_image
from fauna.step_output import mark_complete

CLASSES = ["antelope", "german+shepherd", "killer+whale", "mole"]
SIZE = 32
PER_SPLIT = {"train": 16, "val": 4, "test": 6}


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def make_dataset_dir(
    root: Path,
    synthetic: bool = True,
    seed: int = 0,
    test_per_class: int | None = None,
    shuffled_labels: bool = False,
) -> Path:
    """A split dataset directory in the fauna.data.records format, with its JSON files.

    `test_per_class` enlarges the test split where a test needs evidence between models;
    `shuffled_labels` labels the train and val images at random (nothing to learn; the
    test split keeps its true labels).
    """
    rng = random.Random(seed)
    manifest = []
    sizes = {**PER_SPLIT, **({"test": test_per_class} if test_per_class else {})}
    for split, per_class in sizes.items():
        with ShardWriter(root / split, per_shard=20) as writer:
            for i in range(per_class):  # interleave classes across shards
                for idx, name in enumerate(CLASSES):
                    data = _jpeg(class_image(idx, len(CLASSES), (SIZE, SIZE), rng))
                    if shuffled_labels and split != "test":
                        idx = rng.randrange(len(CLASSES))
                        name = CLASSES[idx]
                    sha = hashlib.sha256(data).hexdigest()
                    rid = f"{split}/{name}/{i:03d}.jpg"
                    shard = writer.write(Record(data, idx, name, sha, rid))
                    manifest.append([rid, name, idx, sha, shard, split])
    with (root / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "label", "label_index", "sha256", "shard", "split"])
        w.writerows(manifest)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    (root / "source.json").write_text(
        json.dumps({"source": "test", "name": "tiny", "synthetic": synthetic, "version": "abc"})
    )
    (root / "preprocess.json").write_text(json.dumps({"image_size": SIZE, "mode": "crop"}))
    mark_complete(root, "split")
    return root


def make_model_dir(root: Path, data: Path, backbone: str, epochs: int, lr: float) -> Path:
    """A tiny functional model trained `epochs` epochs, saved like the train step's output."""
    import keras

    from fauna.data.input_pipeline import make_dataset
    from fauna.plots import plot_history

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(16, activation="relu", name="embedding")(x)
    outputs = keras.layers.Dense(len(CLASSES), activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.compile(
        keras.optimizers.Adam(lr),
        "categorical_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.TopKCategoricalAccuracy(3, name="top3_accuracy"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.F1Score(average="macro", name="macro_f1"),
        ],
    )
    train = make_dataset(data / "train", SIZE, len(CLASSES), 16, training=True)
    val = make_dataset(data / "val", SIZE, len(CLASSES), 16)
    hist = model.fit(train, validation_data=val, epochs=epochs, verbose=0).history
    history = [
        {"epoch": e, "phase": "head", "lr": lr, **{k: float(v[e]) for k, v in hist.items()}}
        for e in range(epochs)
    ]
    root.mkdir(parents=True)
    model.save(root / "model.keras")
    for name in ("classes.json", "preprocess.json", "source.json"):
        shutil.copyfile(data / name, root / name)
    (root / "history.json").write_text(json.dumps(history))
    if epochs > 1:  # the other is left without, to exercise the report's re-plot
        plot_history(history, root / "history.png", backbone)
    info = {
        "backbone": backbone,
        "weights": "none",
        "image_size": SIZE,
        "epochs_run": epochs,
        "train_seconds": 1.5 * epochs,
        "images_per_second": 100.0 + epochs,
    }
    (root / "train_info.json").write_text(json.dumps(info))
    mark_complete(root, "train")
    return root


def make_constant_model(trained: Path, out: Path, backbone: str, favoured: int = 0) -> Path:
    """A real collapsed model, saved like a train output: the same class for every image.

    The head's kernel is zero and its bias favours one class; the embedding layer's kernel
    is zero too, so its features are one constant vector (a collapsed backbone's picture).
    """
    import keras

    shutil.copytree(trained, out)
    model = keras.saving.load_model(out / "model.keras", compile=False)
    for name, bias_value in (("embedding", 0.5), ("predictions", 0.0)):
        layer = model.get_layer(name)
        kernel, bias = layer.get_weights()
        bias[:] = bias_value
        if name == "predictions":
            bias[favoured] = 5.0
        layer.set_weights([np.zeros_like(kernel), bias])
    model.save(out / "model.keras")
    info = json.loads((out / "train_info.json").read_text())
    (out / "train_info.json").write_text(json.dumps({**info, "backbone": backbone}))
    mark_complete(out, "train")
    return out


@pytest.fixture(scope="module")
def constant_dir(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Path:
    root = tmp_path_factory.mktemp("constant")
    return make_constant_model(model_dir, root / "constant", "constant", favoured=3)


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


@pytest.mark.training
def test_evaluate_metrics_are_consistent(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    from fauna.steps.evaluate import evaluate_model

    out = tmp_path / "eval"
    m = evaluate_model(model_dir, dataset, out, EvaluateConfig(top_confused_pairs=3))
    for name in ("metrics.json", "confusion_matrix.png", "confusion_matrix.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(m))
    assert m["backbone"] == "tiny" and m["synthetic"] is True
    assert 0 <= m["top1"] <= m["top3"] <= 1
    for key in ("macro_f1", "weighted_f1", "roc_auc"):
        assert 0 <= m[key] <= 1, key
    assert m["loss"] > 0
    assert m["top1"] > 1 / len(CLASSES)  # it learned something: labels are wired right

    test_labels = Counter(r.label for r in iter_records(dataset / "test"))
    assert m["n_test"] == sum(test_labels.values())
    cm = json.loads((out / "confusion_matrix.json").read_text())
    assert cm["labels"] == CLASSES
    assert np.sum(cm["counts"]) == m["n_test"]
    assert np.trace(cm["counts"]) / m["n_test"] == pytest.approx(m["top1"])

    with (out / "per_class.csv").open() as fh:
        per_class = list(csv.DictReader(fh))
    assert {r["class"]: int(r["support"]) for r in per_class} == dict(test_labels)
    with (out / "predictions.csv").open() as fh:
        preds = list(csv.DictReader(fh))
    assert len(preds) == m["n_test"]
    assert len({p["id"] for p in preds}) == m["n_test"]
    assert sum(p["true"] == p["pred"] for p in preds) / len(preds) == pytest.approx(m["top1"])
    assert all(0 < float(p["confidence"]) <= 1 for p in preds)

    assert len(m["most_confused"]) <= 3
    counts = [p["count"] for p in m["most_confused"]]
    assert counts == sorted(counts, reverse=True)
    assert all(p["true"] != p["predicted"] for p in m["most_confused"])
    _valid_png(out / "confusion_matrix.png")
    assert json.loads((out / "source.json").read_text())["synthetic"] is True


@pytest.mark.training
def test_evaluate_loss_matches_keras(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    import keras

    from fauna.data.input_pipeline import make_dataset
    from fauna.steps.evaluate import evaluate_model

    m = evaluate_model(model_dir, dataset, tmp_path / "eval", EvaluateConfig())
    model = keras.saving.load_model(model_dir / "model.keras")
    ds = make_dataset(dataset / "test", SIZE, len(CLASSES), 7)
    keras_loss, keras_acc = model.evaluate(ds, verbose=0)[:2]
    assert m["loss"] == pytest.approx(keras_loss, rel=1e-3)
    assert m["top1"] == pytest.approx(keras_acc)


@pytest.mark.training
def test_evaluate_class_absent_from_test(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    """A class with no test image is left out of the macro averages instead of crashing."""
    from fauna.steps.evaluate import evaluate_model

    data = tmp_path / "data"
    shutil.copytree(dataset, data, ignore=shutil.ignore_patterns("test"))
    with ShardWriter(data / "test", per_shard=100) as writer:
        for rec in iter_records(dataset / "test"):
            if rec.label != "mole":
                writer.write(rec)
    m = evaluate_model(model_dir, data, tmp_path / "eval", EvaluateConfig())
    assert m["classes_absent_from_test"] == ["mole"]
    assert m["roc_auc_classes"] == len(CLASSES) - 1
    assert m["roc_auc"] is not None and 0 <= m["roc_auc"] <= 1
    assert "mole" in m["averaging_note"]


@pytest.mark.training
def test_evaluate_rejects_mismatched_classes(
    dataset: Path, model_dir: Path, tmp_path: Path
) -> None:
    """The error names the classes that differ, not just their counts."""
    from fauna.steps.evaluate import EvaluationError, evaluate_model

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (data / "classes.json").write_text(json.dumps(CLASSES[::-1]))
    with pytest.raises(EvaluationError, match="another order .*'antelope'.*'mole'"):
        evaluate_model(model_dir, data, tmp_path / "eval", EvaluateConfig())
    (data / "classes.json").write_text(json.dumps(["antelope", "bear", "killer+whale", "wolf"]))
    with pytest.raises(EvaluationError) as caught:
        evaluate_model(model_dir, data, tmp_path / "eval", EvaluateConfig())
    assert str(caught.value).startswith(
        "the model's 4 classes differ from the dataset's 4: only the model has "
        "german+shepherd, mole; only the dataset has bear, wolf"
    )
    assert not (tmp_path / "eval").exists()


@pytest.mark.training
def test_inputs_must_be_the_right_step_outputs(
    dataset: Path, model_dir: Path, tmp_path: Path
) -> None:
    from fauna.step_output import OutputError
    from fauna.steps.evaluate import evaluate_model
    from fauna.steps.tsne import tsne_embeddings

    with pytest.raises(OutputError, match="--model .* is the output of `fauna split`"):
        evaluate_model(dataset, dataset, tmp_path / "eval", EvaluateConfig())
    with pytest.raises(OutputError, match="--data .* is the output of `fauna train`"):
        tsne_embeddings(model_dir, model_dir, tmp_path / "tsne", TsneConfig())


def test_classification_metrics_on_known_predictions() -> None:
    from fauna.score.evaluation import classification_metrics

    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    pred = np.array([0, 0, 1, 1, 1, 1, 2, 0])  # a->b twice, c->a once
    probs = np.full((len(y), 3), 0.1)
    probs[np.arange(len(y)), pred] = 0.8
    m = classification_metrics(y, probs, classes, top_pairs=5)
    assert m["top1"] == pytest.approx(5 / 8)
    assert m["top3"] == 1.0
    assert m["most_confused"][0] == {"true": "a", "predicted": "b", "count": 2, "rate": 0.5}
    assert [(p["true"], p["predicted"]) for p in m["most_confused"]] == [("a", "b"), ("c", "a")]
    assert np.sum(m["confusion_matrix"]) == len(y)
    assert [r["support"] for r in m["per_class"]] == [4, 2, 2]
    assert m["loss"] == pytest.approx(-np.mean(np.log(probs[np.arange(len(y)), y])), rel=1e-6)
    perfect = classification_metrics(y, np.eye(3)[y], classes, top_pairs=5)
    assert perfect["top1"] == perfect["macro_f1"] == perfect["roc_auc"] == 1.0
    assert perfect["most_confused"] == []


def test_confusion_plot_fits_thirty_classes(tmp_path: Path) -> None:
    from fauna.config import PAPER_CLASSES
    from fauna.plots import plot_confusion

    rng = np.random.default_rng(0)
    cm = rng.integers(0, 5, (30, 30)) + np.diag(rng.integers(20, 60, 30))
    width, height = _valid_png(
        plot_confusion(cm, list(PAPER_CLASSES), tmp_path / "cm.png", "thirty classes")
    )
    assert width > 1000 and height > 1000  # big enough for 30 readable names


def test_stratified_sample_keeps_class_shares() -> None:
    from fauna.steps.tsne import stratified_sample

    labels = np.array([0] * 60 + [1] * 30 + [2] * 10)
    idx = stratified_sample(labels, 20, seed=1)
    assert len(idx) == 20 and len(set(idx)) == 20
    assert Counter(labels[idx].tolist()) == {0: 12, 1: 6, 2: 2}
    assert list(stratified_sample(labels, 200, seed=1)) == list(range(100))
    assert list(idx) == list(stratified_sample(labels, 20, seed=1))


@pytest.mark.training
def test_tsne_outputs_and_sample_cap(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    from fauna.steps.tsne import tsne_embeddings

    out = tmp_path / "tsne"
    cap = 12
    info = tsne_embeddings(model_dir, dataset, out, TsneConfig(perplexity=30, max_samples=cap))
    assert info["backbone"] == "tiny"
    assert info["n"] == cap and info["n_test"] == PER_SPLIT["test"] * len(CLASSES)
    assert info["perplexity"] < cap  # clipped for a small sample
    with np.load(out / "embeddings.npz") as npz:
        assert npz["embeddings"].shape == (cap, 16)  # the "embedding" layer's width
        assert npz["tsne"].shape == (cap, 2)
        assert len(npz["labels"]) == len(npz["ids"]) == cap
        assert Counter(npz["labels"].tolist()) == dict.fromkeys(range(len(CLASSES)), 3)
    assert json.loads((out / "tsne.json").read_text()) == info
    _valid_png(out / "tsne.png")
    page = (out / "tsne.html").read_text()
    assert "data:image/png;base64," in page and "Synthetic" in page


@pytest.mark.training
def test_components_log_kfp_artifacts(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    from kfp import dsl

    from fauna.components.evaluate import evaluate
    from fauna.components.tsne import tsne

    cfg = Config()
    evaluation = dsl.Dataset(uri=str(tmp_path / "evaluation"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    confusion = dsl.ClassificationMetrics(uri=str(tmp_path / "confusion"))
    evaluate.python_func(
        evaluate_config=dataclasses.asdict(cfg.evaluate),
        model=dsl.Model(uri=str(model_dir)),
        data=dsl.Dataset(uri=str(dataset)),
        evaluation=evaluation,
        metrics=metrics,
        confusion=confusion,
    )
    saved = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    assert metrics.metadata["top1"] == saved["top1"]
    assert metrics.metadata["n_test"] == saved["n_test"]
    matrix = confusion.metadata["confusionMatrix"]
    assert [a["displayName"] for a in matrix["annotationSpecs"]][1] == "german shepherd"
    assert sum(sum(r["row"]) for r in matrix["rows"]) == saved["n_test"]
    plot = dsl.HTML(uri=str(tmp_path / "plot.html"))
    tsne.python_func(
        tsne_config=dataclasses.asdict(cfg.tsne),
        evaluation=evaluation,  # its features.npz: the pipeline's route
        data=dsl.Dataset(uri=str(dataset)),
        tsne=dsl.Dataset(uri=str(tmp_path / "tsne")),
        plot=plot,
    )
    assert Path(plot.path).read_text().startswith("<!DOCTYPE html>")


@pytest.mark.training
def test_cli_evaluate(dataset: Path, model_dir: Path, tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(model_dir), "--data", str(dataset), "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["top1"] == json.loads((out / "metrics.json").read_text())["top1"]
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(dataset), "--out", "x"]) == 2


@pytest.mark.training
def test_compare_on_real_evaluations(
    dataset: Path, model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Two real models through evaluate and t-SNE, then compare: the trained one wins."""
    from fauna.steps.compare import compare_backbones
    from fauna.steps.evaluate import evaluate_model
    from fauna.steps.tsne import tsne_embeddings

    root = tmp_path_factory.mktemp("cmp")
    weak = make_model_dir(root / "weak", dataset, "weak", 1, 1e-5)
    cfg = Config()
    evals = []
    for m in (weak, model_dir):
        evals.append(evaluate_model(m, dataset, root / f"eval-{m.name}", cfg.evaluate))
        tsne_embeddings(m, dataset, root / f"tsne-{m.name}", cfg.tsne)
    assert evals[1]["macro_f1"] > evals[0]["macro_f1"]
    out = root / "report"
    result = compare_backbones(
        [model_dir, weak],  # a different order from the evaluations, as dsl.Collected may give
        [root / "eval-weak", root / "eval-tiny"],
        [root / "tsne-tiny", root / "tsne-weak"],
        out,
        cfg,
        data_dir=dataset,
    )
    assert result["champion"]["backbone"] == "tiny"
    assert result["champion"]["value"] == pytest.approx(evals[1]["macro_f1"])
    assert result["synthetic"] is True
    md = (out / "report.md").read_text()
    assert "SYNTHETIC DATA" in md
    for name in ("tiny-confusion", "tiny-history", "weak-history", "weak-tsne"):
        assert (out / "images" / f"{name}.png").is_file(), name
        assert f"images/{name}.png" in md
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["totals"] == {s: n * len(CLASSES) for s, n in PER_SPLIT.items()}


@pytest.mark.training
def test_constant_model_is_flagged_and_a_working_one_is_not(
    dataset: Path, model_dir: Path, constant_dir: Path, tmp_path: Path
) -> None:
    from fauna.steps.evaluate import evaluate_model

    good = evaluate_model(model_dir, dataset, tmp_path / "good", EvaluateConfig())
    bad = evaluate_model(constant_dir, dataset, tmp_path / "bad", EvaluateConfig())
    assert good["degenerate"] is False and good["degenerate_reason"] is None
    diversity = good["prediction_diversity"]
    assert diversity["distinct_predicted"] >= 3 and diversity["entropy_ratio"] > 0.5
    assert diversity["feature_spread"] > 0.01

    n_test = PER_SPLIT["test"] * len(CLASSES)
    assert bad["degenerate"] is True
    assert f"it predicts one class (mole) for all {n_test} test images" in bad["degenerate_reason"]
    assert "penultimate-layer features are the same for every image" in bad["degenerate_reason"]
    diversity = bad["prediction_diversity"]
    assert diversity["distinct_predicted"] == 1 and diversity["top_class"] == "mole"
    assert diversity["entropy_ratio"] == 0.0 and diversity["feature_spread"] < 1e-6
    assert json.loads((tmp_path / "bad" / "metrics.json").read_text())["degenerate"] is True


def test_guard_thresholds_on_known_predictions() -> None:
    """Nearly one class is flagged; an imbalanced truth followed faithfully is not."""
    from fauna.score.evaluation import degenerate_reason, prediction_diversity

    classes = ["a", "b", "c", "d"]
    y_true = np.array([0] * 25 + [1] * 25 + [2] * 25 + [3] * 25)
    nearly = np.array([0] * 97 + [1, 2, 3])
    reason = degenerate_reason(prediction_diversity(y_true, nearly, classes), 100)
    assert reason is not None and "it predicts a for 97% of the test images" in reason
    skewed_truth = np.array([0] * 92 + [1, 1, 2, 2, 3, 3, 3, 3])
    faithful = skewed_truth.copy()
    faithful[[0, 1]] = 1  # a good model on an imbalanced test split
    assert degenerate_reason(prediction_diversity(skewed_truth, faithful, classes), 100) is None
    one_true_class = np.zeros(10, dtype=int)
    assert (
        degenerate_reason(prediction_diversity(one_true_class, one_true_class, classes), 10) is None
    )
    assert "features are the same" in degenerate_reason(
        prediction_diversity(y_true, y_true, classes, spread=1e-9), 100
    )


@pytest.mark.training
def test_tsne_says_why_instead_of_plotting_noise(
    dataset: Path, constant_dir: Path, tmp_path: Path
) -> None:
    from fauna.steps.tsne import tsne_embeddings

    out = tmp_path / "tsne"
    info = tsne_embeddings(constant_dir, dataset, out, TsneConfig())
    assert info["feature_spread"] < 1e-6
    assert "features are the same for every image" in info["degenerate_reason"]
    assert not (out / "tsne.png").exists()
    page = (out / "tsne.html").read_text()
    assert "No t-SNE plot" in page and "numerical noise" in page and "<img" not in page
    with np.load(out / "embeddings.npz") as npz:
        assert npz["embeddings"].shape[0] == info["n"]


@pytest.mark.training
def test_compare_never_crowns_a_constant_model(
    dataset: Path,
    model_dir: Path,
    constant_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Real evaluations: the working model is champion; alone, the constant one is not."""
    from fauna.steps.compare import compare_backbones
    from fauna.steps.evaluate import evaluate_model
    from fauna.steps.tsne import tsne_embeddings

    root = tmp_path_factory.mktemp("guard")
    cfg = Config()
    for m in (model_dir, constant_dir):
        evaluate_model(m, dataset, root / f"eval-{m.name}", cfg.evaluate)
        tsne_embeddings(m, dataset, root / f"tsne-{m.name}", cfg.tsne)
    result = compare_backbones(
        [model_dir, constant_dir],
        [root / "eval-constant", root / "eval-tiny"],
        [root / "tsne-constant", root / "tsne-tiny"],
        root / "report",
        cfg,
        data_dir=dataset,
    )
    assert result["champion"]["backbone"] == "tiny"
    assert "predicts one class (mole)" in result["flagged"]["constant"]
    md = (root / "report" / "report.md").read_text()
    assert md.index("Not eligible as champion") < md.index("Champion: tiny")
    assert "constant: no t-SNE plot" in md

    alone = compare_backbones(
        [constant_dir], [root / "eval-constant"], [], root / "alone", cfg, data_dir=dataset
    )
    assert alone["champion"] is None
    assert "NO CHAMPION" in (root / "alone" / "report.html").read_text()


@pytest.mark.training
def test_non_finite_outputs_are_a_degenerate_model_not_a_traceback(
    dataset: Path, model_dir: Path, tmp_path: Path
) -> None:
    """A diverged model (NaN weights, so NaN probabilities) is flagged with the reason."""
    import keras

    from fauna.score.policy import Predictions
    from fauna.steps.evaluate import evaluate_model

    diverged = tmp_path / "diverged"
    shutil.copytree(model_dir, diverged)
    model = keras.saving.load_model(diverged / "model.keras", compile=False)
    layer = model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    layer.set_weights([np.full_like(kernel, np.nan), bias])
    model.save(diverged / "model.keras")

    metrics = evaluate_model(diverged, dataset, tmp_path / "eval", EvaluateConfig())
    n_test = PER_SPLIT["test"] * len(CLASSES)
    assert metrics["degenerate"] is True
    assert metrics["degenerate_reason"].startswith(
        f"its outputs are not finite (NaN or infinity) for {n_test} of {n_test} test images: "
        "the model diverged in training"
    )
    assert all(np.isfinite(metrics[k]) for k in ("loss", "top1", "macro_f1"))
    saved = Predictions.load(tmp_path / "eval" / "predictions.npz")
    assert saved.n == n_test and np.isfinite(saved.probs).all()
