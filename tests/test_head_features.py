"""The head phase on backbone features computed once (fauna.training.features).

A weights file stands in for ImageNet (nothing downloads), so the recipe has a head phase
with the backbone frozen. Tiny images, few of them: the questions are whether the head on
features predicts what the full model predicts, and whether training and resuming through
it give the run the recomputing path gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_train import Preempted, kill_after, make_split_dataset, tiny_config

SIZE = 32


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
    with head_features(model, data, 4, seed=1, scratch=tmp_path) as (head, _train, val):
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
