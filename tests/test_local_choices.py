"""How `fauna local-run` chooses its backend, data and settings (no training here)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
from pathlib import Path

import pytest

from fauna.cli import main
from fauna.errors import FaunaError
from fauna.pipelines import local
from fauna.synthetic import SYNTHETIC_MARKER


def _args(**kw) -> argparse.Namespace:
    base = dict(
        overrides=[],
        backbones=None,
        image_size=None,
        epochs=None,
        config=None,
        profile=None,
        data=None,
        backend=None,
    )
    return argparse.Namespace(**{**base, **kw})


def test_backend_is_embedded_without_docker_engine_or_kind(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert local.choose_backend(None) == ("embedded", "kind is not installed")
    assert local.choose_backend("kind")[0] == "kind"
    with pytest.raises(FaunaError, match="BACKEND must be embedded or kind"):
        local.choose_backend("docker")


def test_smoke_profile_by_default_and_shortcuts(monkeypatch):
    monkeypatch.delenv("PROFILE", raising=False)
    cfg = local.local_config(_args(backbones="resnet50, inceptionv3", image_size="96"))
    assert cfg.train.backbones == ["resnet50", "inceptionv3"]
    assert cfg.preprocess.image_size == 96 and cfg.train.weights == "none"
    assert cfg.pipeline.use_gpu is False


def test_epochs_apply_to_every_backbone_even_with_paper_overrides():
    cfg = local.local_config(_args(profile="paper", epochs="3"))
    for name in cfg.train.backbones:  # the paper sets fine_tune_epochs per backbone
        b = cfg.train.for_backbone(name)
        assert b.head_epochs + b.fine_tune_epochs == 3, name


def test_generated_sample_without_kaggle_credentials(tmp_path, monkeypatch):
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = local.local_config(_args())
    source, described = local.choose_data(None, cfg, tmp_path)
    assert "GENERATED sample" in described
    assert (Path(source) / SYNTHETIC_MARKER).is_file()
    assert len([d for d in Path(source).iterdir() if d.is_dir()]) == 30
    monkeypatch.setenv("KAGGLE_USERNAME", "u")
    monkeypatch.setenv("KAGGLE_KEY", "k")
    assert local.choose_data(None, cfg, tmp_path)[0] == cfg.data.source
    assert local.choose_data("s3://b/p", cfg, tmp_path)[0] == "s3://b/p"


def test_kind_backend_hands_the_choices_to_the_script(bare_path, monkeypatch, capfd):
    """BACKEND=kind runs the kind script (dry run here) with the same choices as --set flags."""
    monkeypatch.setenv("PATH", bare_path)
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("TAG", "abc1234")
    for key in [k for k in os.environ if k.startswith(("KAGGLE_", "DATA", "SUBMIT_ARGS"))]:
        monkeypatch.delenv(key)
    rc = main(["local-run", "--backend", "kind", "--backbones", "resnet50", "--epochs", "2"])
    out = capfd.readouterr().out
    assert rc == 0, out
    submit = next(shlex.split(line[2:]) for line in out.splitlines() if " submit " in line)
    assert "train.backbones=[resnet50]" in submit
    overrides = json.loads(
        next(a for a in submit if a.startswith("train.overrides=")).split("=")[1]
    )
    assert overrides == {"resnet50": {"head_epochs": 1, "fine_tune_epochs": 1}}
