"""How `fauna local-run` chooses its backend, data and settings (no training here)."""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

import pytest

from fauna.cli import build_parser, main
from fauna.config import load_config
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
    assert local.choose_backend(None) == ("embedded", "docker is not installed")
    assert local.choose_backend("kind")[0] == "kind"
    assert local.choose_backend("docker")[0] == "docker"
    with pytest.raises(FaunaError, match="BACKEND must be embedded, docker or kind"):
        local.choose_backend("podman")


def test_smoke_profile_by_default_unless_profile_says_otherwise(monkeypatch):
    monkeypatch.delenv("PROFILE", raising=False)
    args = build_parser("local-run").parse_args(["local-run", "--backbones", "resnet50, vgg16"])
    assert args.profile == "smoke" and args.backbones == ["resnet50", "vgg16"]
    monkeypatch.setenv("PROFILE", "paper")
    assert build_parser("local-run").parse_args(["local-run"]).profile == "paper"
    # Other commands use the defaults (the paper's settings) unless told.
    assert (
        build_parser("train")
        .parse_args(["train", "--data", "d", "--backbone", "x", "--out", "o"])
        .profile
        is None
    )


def test_generated_sample_without_kaggle_credentials(tmp_path, monkeypatch):
    for key in ("KAGGLE_USERNAME", "KAGGLE_KEY"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(profile="smoke")
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
    # The run parameters travel as the same flags `fauna submit` takes, not as --set strings.
    assert submit[submit.index("--backbones") + 1] == "resnet50"
    assert submit[submit.index("--epochs") + 1] == "2"
