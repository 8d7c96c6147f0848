"""evaluate + t-SNE on a tiny real Keras model trained on generated shards.

The dataset and model follow the train step's contracts (shards, classes.json,
source.json, preprocess.json; model.keras with "embedding" and "predictions"
layers, history.json, train_info.json), built here so these tests do not depend
on the train step.
"""

from __future__ import annotations

import csv
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
from fauna.records import Record, ShardWriter, iter_records
from fauna.synthetic import class_image

CLASSES = ["antelope", "german+shepherd", "killer+whale", "mole"]
SIZE = 32
PER_SPLIT = {"train": 16, "val": 4, "test": 6}


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def make_dataset_dir(root: Path, synthetic: bool = True, seed: int = 0) -> Path:
    """A split dataset directory in the fauna.records format, with its JSON files."""
    rng = random.Random(seed)
    manifest = []
    for split, per_class in PER_SPLIT.items():
        with ShardWriter(root / split, per_shard=20) as writer:
            for i in range(per_class):  # interleave classes across shards
                for idx, name in enumerate(CLASSES):
                    data = _jpeg(class_image(idx, len(CLASSES), (SIZE, SIZE), rng))
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
    return root


def make_model_dir(root: Path, data: Path, backbone: str, epochs: int, lr: float) -> Path:
    """A tiny functional model trained `epochs` epochs, saved like the train step's output."""
    import keras

    from fauna.inputs import make_dataset
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
    return root


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset_dir(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Path) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("m") / "tiny", dataset, "tiny", 8, 1e-2)


def _valid_png(path: Path) -> tuple[int, int]:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG"
        return img.size


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


def test_evaluate_loss_matches_keras(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    import keras

    from fauna.inputs import make_dataset
    from fauna.steps.evaluate import evaluate_model

    m = evaluate_model(model_dir, dataset, tmp_path / "eval", EvaluateConfig())
    model = keras.saving.load_model(model_dir / "model.keras")
    ds = make_dataset(dataset / "test", SIZE, len(CLASSES), 7)
    keras_loss, keras_acc = model.evaluate(ds, verbose=0)[:2]
    assert m["loss"] == pytest.approx(keras_loss, rel=1e-3)
    assert m["top1"] == pytest.approx(keras_acc)


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


def test_evaluate_rejects_mismatched_classes(
    dataset: Path, model_dir: Path, tmp_path: Path
) -> None:
    from fauna.steps.evaluate import EvaluationError, evaluate_model

    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    (data / "classes.json").write_text(json.dumps(CLASSES[::-1]))
    with pytest.raises(EvaluationError, match="classes"):
        evaluate_model(model_dir, data, tmp_path / "eval", EvaluateConfig())


def test_classification_metrics_on_known_predictions() -> None:
    from fauna.steps.evaluate import classification_metrics

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
    from fauna.steps.evaluate import plot_confusion

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


def test_components_log_kfp_artifacts(dataset: Path, model_dir: Path, tmp_path: Path) -> None:
    from kfp import dsl

    from fauna.components.evaluate import evaluate
    from fauna.components.tsne import tsne

    cfg = json.dumps(Config().to_dict())
    evaluation = dsl.Dataset(uri=str(tmp_path / "evaluation"))
    metrics = dsl.Metrics(uri=str(tmp_path / "metrics"))
    confusion = dsl.ClassificationMetrics(uri=str(tmp_path / "confusion"))
    evaluate.python_func(
        config_json=cfg,
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
        config_json=cfg,
        model=dsl.Model(uri=str(model_dir)),
        data=dsl.Dataset(uri=str(dataset)),
        tsne=dsl.Dataset(uri=str(tmp_path / "tsne")),
        plot=plot,
    )
    assert Path(plot.path).read_text().startswith("<!DOCTYPE html>")


def test_cli_evaluate(dataset: Path, model_dir: Path, tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(model_dir), "--data", str(dataset), "--out", str(out)])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["top1"] == json.loads((out / "metrics.json").read_text())["top1"]
    assert main(["evaluate", "--model", str(tmp_path), "--data", str(dataset), "--out", "x"]) == 2


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
