"""The head phase on backbone features computed once (fauna.training.features).

A weights file stands in for ImageNet (nothing downloads), so the recipe has a head phase
with the backbone frozen. Tiny images, few of them: the questions are whether the head on
features predicts what the full model predicts, and whether training and resuming through
it give the run the recomputing path gives; with train-time augmentation and
`train.head_feature_views`, whether K views are K augmented feature sets, one per epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train import Preempted, kill_after, make_split_dataset, tiny_config

SIZE = 32


AUGMENT = {"mode": "augment", "rotation": 0.2, "zoom": 0.2, "translation": 0.1, "contrast": 0.2}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, Path]:
    """(split data, a mobilenetv2 weights file standing in for ImageNet)."""
    from fauna.model.backbones import get_backbone

    root = tmp_path_factory.mktemp("head_features")
    data = make_split_dataset(root / "data", size=SIZE, per_class={"train": 6, "val": 3})
    weights = root / "mobilenetv2.weights.h5"
    get_backbone("mobilenetv2").build(SIZE, "none").save_weights(weights)
    return data, weights


@pytest.mark.training
def test_head_on_features_predicts_what_the_full_model_predicts(pretrained, tmp_path) -> None:
    """Same weights, same images: predictions within float tolerance (BatchNorm inference)."""
    from fauna.config import BackboneTrainConfig
    from fauna.data.input_pipeline import make_dataset
    from fauna.model.network import build_model
    from fauna.training.features import head_features
    from fauna.training.trainset import load_training_data

    data_dir, weights = pretrained
    data = load_training_data(data_dir)
    cfg = BackboneTrainConfig(weights=str(weights), dense_units=[16], dropout=0.3)
    model = build_model("mobilenetv2", SIZE, 3, cfg, str(weights))
    with head_features(model, data, 4, seed=1, scratch=tmp_path) as (head, _train, val, _):
        on_features = np.concatenate([head(x, training=False) for x, _ in val])
        labels = np.concatenate([y for _, y in val])
    images = make_dataset(data.val_dir, SIZE, 3, 4)
    on_images = np.concatenate([model(x, training=False) for x, _ in images])
    expected = np.concatenate([y for _, y in images])
    np.testing.assert_array_equal(labels, expected)  # same images, same order
    np.testing.assert_allclose(on_features, on_images, rtol=1e-4, atol=1e-5)
    assert not (tmp_path / "head-features").exists()


@pytest.mark.training
def test_features_spill_to_disk_beyond_the_memory_limit(pretrained, tmp_path, monkeypatch):
    from fauna.config import BackboneTrainConfig
    from fauna.model.network import build_model
    from fauna.training import features
    from fauna.training.trainset import load_training_data

    data_dir, weights = pretrained
    data = load_training_data(data_dir)
    cfg = BackboneTrainConfig(weights=str(weights), dense_units=[16])
    model = build_model("mobilenetv2", SIZE, 3, cfg, str(weights))
    in_memory = features.extract(model, data.train_dir, data, 4, None)
    monkeypatch.setattr(features, "IN_MEMORY_BYTES", 0)
    spilled = features.extract(model, data.train_dir, data, 4, tmp_path / "train.npy")
    assert isinstance(spilled.values, np.memmap) and (tmp_path / "train.npy").stat().st_size
    np.testing.assert_array_equal(spilled.values, in_memory.values)
    batches = list(spilled.dataset(3, 5, shuffle_seed=3))
    assert [len(x) for x, _ in batches] == [5, 5, 5, 3]
    seen = np.concatenate([x for x, _ in batches])
    assert sorted(map(tuple, seen)) == sorted(map(tuple, in_memory.values))  # each once


def _train(data: Path, out: Path, weights: Path, once: bool, **kwargs):
    from fauna.steps.train import train_backbone

    cfg = tiny_config(
        weights=str(weights), head_features_once=once, head_epochs=2, fine_tune_epochs=1
    ).train
    return train_backbone(data, out, "mobilenetv2", cfg, export=False, **kwargs)


@pytest.mark.training
@pytest.mark.slow  # three short trainings: ~2.5 min on 2 shared cores (loaded)
def test_training_through_features_matches_recomputing_and_resumes(
    pretrained, tmp_path, deterministic_ops
) -> None:
    """Head phase (2 epochs) on features, then one of fine-tuning; killed after epoch 1 and resumed.

    Against the recomputing path: the same phases and epochs, and a loss curve within
    0.15 (the batches are shuffled differently: features by index, images by shard), the
    fine-tuned model's predictions close; with augmentation off both runs see clean images.
    """
    from fauna.model.artifact import load_model

    data, weights = pretrained
    recomputed = tmp_path / "recomputed"
    _train(data, recomputed, weights, once=False)
    once = tmp_path / "once"
    with pytest.raises(Preempted):
        _train(data, once, weights, once=True, extra_callbacks=[kill_after(1)])
    _train(data, once, weights, once=True)  # resumes mid head phase (epoch 2 of 2)

    a = json.loads((recomputed / "history.json").read_text())
    b = json.loads((once / "history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in b] == [(h["phase"], h["epoch"]) for h in a]
    assert [h["phase"] for h in b] == ["head", "head", "fine_tune"]
    runs = [h["run_id"] for h in b]
    assert runs[1] != runs[0] and len(set(runs[1:])) == 1  # resumed after epoch 1
    for x, y in zip(a, b, strict=True):
        assert abs(x["loss"] - y["loss"]) < 0.15 and abs(x["val_loss"] - y["val_loss"]) < 0.15
    model_a, model_b = load_model(recomputed), load_model(once)
    probe = np.random.default_rng(0).uniform(0, 255, (4, SIZE, SIZE, 3)).astype("float32")
    assert np.abs(model_a(probe) - model_b(probe)).max() < 0.2


@pytest.fixture(scope="module")
def augmented(pretrained, tmp_path_factory) -> Path:
    """An augment output (train-time augmentation on), 10 train and 3 val images a class."""
    root = tmp_path_factory.mktemp("augmented")
    return make_split_dataset(
        root / "data", size=SIZE, per_class={"train": 10, "val": 3}, seed=2, augment=AUGMENT
    )


@pytest.mark.training
def test_k_augmented_views_are_k_distinct_feature_sets(
    pretrained, augmented, tmp_path, monkeypatch
):
    """Each view is one pass through the real augmentation layers: K different feature sets,
    none the clean one, same labels; computed again (a resumed run) they are the same."""
    from fauna.config import BackboneTrainConfig
    from fauna.model.network import build_model
    from fauna.training import features
    from fauna.training.trainset import load_training_data

    _, weights = pretrained
    data = load_training_data(augmented)
    cfg = BackboneTrainConfig(weights=str(weights), dense_units=[16])
    model = build_model("mobilenetv2", SIZE, 3, cfg, str(weights))
    clean = features.extract(model, data.train_dir, data, 4, None)
    monkeypatch.setattr(features, "IN_MEMORY_BYTES", 0)  # the views spill to disk
    spill = tmp_path / "views.npy"
    views = features.extract_views(model, data, 4, 3, seed=7, spill=spill)
    assert isinstance(views.stack, np.memmap) and views.stack.shape == (3, 30, 1280)
    np.testing.assert_array_equal(views.labels, clean.labels)
    sets = [clean.values, *views.stack]
    for i in range(len(sets)):
        for j in range(i + 1, len(sets)):
            change = np.abs(sets[i] - sets[j]).mean() / np.abs(sets[i]).mean()
            assert change > 0.05, (i, j, change)  # (random weights: tiny features, so relative)
    again = features.extract_views(model, data, 4, 3, seed=7, spill=None)
    np.testing.assert_allclose(again.stack, views.stack, rtol=1e-5, atol=1e-6)

    batches = views.dataset(3, 8, shuffle_seed=1)  # built once, as fit gets it
    for epoch in (0, 1, 2, 3, 4):
        views.select(epoch)
        seen = np.concatenate([x for x, _ in batches])
        assert sorted(map(tuple, seen)) == sorted(map(tuple, views.stack[epoch % 3]))


@pytest.mark.training
def test_fit_trains_epoch_e_on_view_e_mod_k() -> None:
    """Keras' own fit: a head that does not learn (rate 0) reports, each epoch, the loss of
    the view it read; from epoch 2 (as a resumed run starts) of 3 views: 2, 0, 1, 2, 0."""
    import keras

    from fauna.training.features import CycleViews, ViewCycle

    rng = np.random.default_rng(0)
    stack = rng.normal(size=(3, 20, 8)).astype("float32") * np.float32([1, 3, 6])[:, None, None]
    labels = rng.integers(0, 3, 20).astype("int32")
    views = ViewCycle(stack, labels)
    head = keras.Sequential([keras.Input((8,)), keras.layers.Dense(3, activation="softmax")])
    head.compile(optimizer=keras.optimizers.SGD(0.0), loss="categorical_crossentropy")
    onehot = keras.utils.to_categorical(labels, 3)
    expected = [head.evaluate(v, onehot, batch_size=20, verbose=0) for v in stack]
    assert (
        min(abs(a - b) for a, b in [(expected[0], expected[1]), (expected[1], expected[2])]) > 0.1
    )
    history = head.fit(
        views.dataset(3, 6, shuffle_seed=0),
        epochs=7,
        initial_epoch=2,
        callbacks=[CycleViews(views)],
        verbose=0,
    )
    want = [expected[e % 3] for e in range(2, 7)]
    np.testing.assert_allclose(history.history["loss"], want, rtol=1e-4)


def test_views_decide_when_the_head_phase_runs_on_features(pretrained) -> None:
    """K = 0 leaves the decision as it was: augmentation on means the backbone every epoch."""
    from types import SimpleNamespace

    from fauna.config import AugmentConfig, TrainConfig
    from fauna.training.loop import features_once
    from fauna.training.recipe import plan_recipe

    _, weights = pretrained
    recipe = plan_recipe(TrainConfig(weights=str(weights)), steps_per_epoch=8)
    head, fine_tune = recipe.phases

    def once(augment: bool, phase=head, **settings) -> bool:
        data = SimpleNamespace(augment=AugmentConfig() if augment else None)
        cfg = TrainConfig(weights=str(weights), **settings)
        return features_once(SimpleNamespace(recipe=recipe, data=data, cfg=cfg), phase)

    assert once(False) and not once(True)  # K = 0, as before
    assert once(True, head_feature_views=2) and once(False, head_feature_views=2)
    assert not once(True, head_feature_views=2, head_features_once=False)
    assert not once(True, fine_tune, head_feature_views=2)
    assert not once(False, fine_tune)


@pytest.mark.training
@pytest.mark.slow  # two short DenseNet121 head trainings: 2.5-4 min on 2 shared cores (loaded)
def test_head_learns_on_augmented_views_and_resumes(
    augmented, tmp_path, caplog, deterministic_ops
) -> None:
    """Two views, four head epochs at a high rate, killed after epoch 2 and resumed: the
    views are computed in both runs, the loss falls and validation beats chance.

    DenseNet121 stands in for ImageNet here: from random weights its pooled features vary
    from image to image (MobileNetV2's are ~1e-11, nothing for a head to learn from)."""
    import keras

    from fauna.model.backbones import get_backbone
    from fauna.steps.train import train_backbone

    keras.utils.set_random_seed(0)  # the same stand-in backbone every run
    weights = tmp_path / "densenet121.weights.h5"
    get_backbone("densenet121").build(SIZE, "none").save_weights(weights)
    cfg = tiny_config(
        weights=str(weights),
        head_feature_views=2,
        head_epochs=4,
        fine_tune_epochs=0,
        learning_rate=1e-2,
        dropout=0.0,
    ).train
    out = tmp_path / "model"
    caplog.set_level("INFO", logger="fauna")
    with pytest.raises(Preempted):
        train_backbone(
            augmented, out, "densenet121", cfg, export=False, extra_callbacks=[kill_after(2)]
        )
    train_backbone(augmented, out, "densenet121", cfg, export=False)
    computed = [r.message for r in caplog.records if "2 augmented views of 30 train" in r.message]
    assert len(computed) == 2, caplog.text[-2000:]
    history = json.loads((out / "history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [("head", e) for e in range(4)]
    runs = [h["run_id"] for h in history]
    assert runs[0] == runs[1] != runs[2] == runs[3]
    curve = [(round(h["loss"], 3), round(h["val_accuracy"], 2)) for h in history]
    print(f"\nviews: (loss, val_accuracy) per epoch {curve}")
    assert history[-1]["loss"] < history[0]["loss"], curve
    assert history[-1]["val_accuracy"] > 0.5, curve
