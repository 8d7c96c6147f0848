"""How `fauna local-run` chooses its backend, data and settings (no training here)."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
from fake_docker import install_fake_docker

from fauna.cli import build_parser, main
from fauna.config import load_config
from fauna.data.synthetic import SYNTHETIC_MARKER
from fauna.errors import FaunaError
from fauna.pipelines import local


def _fake_path(tmp_path: Path, bare_path: str, *, docker: bool, kind: bool) -> str:
    """A PATH with the basic tools, a docker stand-in and a kind stand-in, as asked."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    if docker:
        install_fake_docker(bindir / "docker")
    if kind:
        (bindir / "kind").write_text("#!/bin/sh\nexit 0\n")
        (bindir / "kind").chmod(0o755)
    return f"{bindir}:{bare_path}"


@pytest.mark.parametrize(
    ("docker", "client", "server", "buildx", "kind", "chosen", "why"),
    [
        (False, "", "", "", True, "embedded", "docker is not installed"),
        (True, "28.2.2", "", "yes", True, "embedded", "no Docker engine answers"),
        # Issue 17: an engine answers, the CLI has no buildx: the embedded route, not a failure.
        (True, "28.2.2", "28.2.2", "", False, "embedded", "needs the buildx plugin"),
        (True, "28.2.2", "28.2.2", "", True, "embedded", "needs the buildx plugin"),
        (True, "20.10.24", "20.10.24", "", False, "docker", "no kind"),  # Debian's docker.io
        (True, "28.2.2", "28.2.2", "yes", False, "docker", "no kind"),
        (True, "28.2.2", "28.2.2", "yes", True, "kind", "Docker (with BuildKit) and kind"),
    ],
)
def test_a_route_is_chosen_only_when_all_its_prerequisites_hold(
    tmp_path, bare_path, monkeypatch, docker, client, server, buildx, kind, chosen, why
):
    monkeypatch.setenv("PATH", _fake_path(tmp_path, bare_path, docker=docker, kind=kind))
    monkeypatch.delenv("DOCKER", raising=False)
    for key, value in (("CLIENT", client), ("SERVER", server), ("BUILDX", buildx)):
        monkeypatch.setenv(key, value)
    backend, reason = local.choose_backend(None)
    assert (backend, why in reason) == (chosen, True), reason
    assert "\n" not in reason


def test_an_explicit_backend_is_kept_or_fails_in_one_line(tmp_path, bare_path, monkeypatch, capfd):
    monkeypatch.setenv("PATH", _fake_path(tmp_path, bare_path, docker=True, kind=False))
    monkeypatch.delenv("DOCKER", raising=False)
    for key, value in (("CLIENT", "28.2.2"), ("SERVER", "28.2.2"), ("BUILDX", "")):
        monkeypatch.setenv(key, value)
    with pytest.raises(FaunaError, match="BACKEND=docker cannot run here: .*buildx") as failed:
        local.choose_backend("docker")
    assert "\n" not in str(failed.value)
    # Through the command: one line, exit 2, before any run folder is made.
    capfd.readouterr()
    assert main(["local-run", "--backend", "docker", "--runs-dir", str(tmp_path / "r")]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == [f"fauna local-run: error: {failed.value}"]
    assert not (tmp_path / "r").exists()
    assert local.choose_backend("embedded") == ("embedded", "requested with BACKEND")
    assert local.choose_backend("kind")[0] == "kind"  # the kind script checks for itself
    monkeypatch.setenv("BUILDX", "yes")
    assert local.choose_backend("docker") == ("docker", "requested with BACKEND")
    with pytest.raises(FaunaError, match="BACKEND must be embedded, docker or kind"):
        local.choose_backend("podman")


def test_local_run_takes_the_knobs_by_submits_names(monkeypatch):
    """`--source` as submit says it (`--data` and $DATA stay as aliases), and every knob."""

    def parse(argv):  # the variables are read when the parser is built
        return build_parser("local-run").parse_args(argv)

    monkeypatch.delenv("DATA", raising=False)
    assert parse(["local-run", "--source", "s3://b/p"]).source == "s3://b/p"
    assert parse(["local-run", "--data", "./photos"]).source == "./photos"
    monkeypatch.setenv("DATA", "./env-photos")
    monkeypatch.setenv("EPOCHS", "2")
    args = parse(
        ["local-run", "--augment-mode", "oversample", "--champion-metric", "top1"]
        + ["--learning-rate", "0.01", "--backbone-overrides", '{"resnet50": {"batch_size": 8}}']
    )
    assert (args.source, args.epochs, args.augment_mode) == ("./env-photos", 2, "oversample")
    assert args.learning_rate == 0.01 and args.backbone_overrides == {"resnet50": {"batch_size": 8}}
    assert args.champion_metric == "top1"
    with pytest.raises(SystemExit):
        parse(
            ["local-run", "--backbone-overrides", "[1, 2]"]
        )  # not a JSON object: argparse says so


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
    overrides = '{"resnet50": {"batch_size": 8}}'
    rc = main(
        ["local-run", "--backend", "kind", "--backbones", "resnet50", "--epochs", "2"]
        + ["--learning-rate", "0.01", "--backbone-overrides", overrides, "--parallelism", "1"]
    )
    captured = capfd.readouterr()
    out = captured.out
    assert rc == 0, out + captured.err
    # The choice and why: one log line (stderr), not a print.
    assert "[local] backend: kind (requested with BACKEND)" in captured.err.splitlines()
    submit = next(shlex.split(line[2:]) for line in out.splitlines() if " submit " in line)
    # The knobs travel as the same flags `fauna submit` takes, not as --set strings.
    assert submit[submit.index("--backbones") + 1] == "resnet50"
    assert submit[submit.index("--epochs") + 1] == "2"
    assert submit[submit.index("--learning-rate") + 1] == "0.01"
    assert json.loads(submit[submit.index("--backbone-overrides") + 1]) == json.loads(overrides)
    assert submit[submit.index("--parallelism") + 1] == "1"
    args = build_parser("submit").parse_args(["submit", *submit[submit.index("submit") + 1 :]])
    assert args.backbone_overrides == json.loads(
        overrides
    )  # what the kind route hands on parses back


def test_the_summary_table_names_its_metrics_as_the_spec_does():
    """The console summary's headers come from the metric spec; a metric not measured
    (None, as roc_auc can be) reads nan rather than failing the run's last line."""
    from fauna.score.metrics import metric_spec

    metrics = {
        "backbones": {
            "vgg16": {"top1": 0.9833, "top3": 1.0, "macro_f1": 0.9832}
            | {"train_seconds": 163.2, "images_per_second": 16.54},
            "tiny": {"top1": 0.5, "top3": None, "macro_f1": 0.4, "train_seconds": 2},
        }
    }
    head, vgg, tiny = local.summary_table(metrics).splitlines()
    assert head.split() == [
        "backbone",
        *(metric_spec(k).header for k in local.SUMMARY_METRICS),
        "train",
        "s",
        "img/s",
    ]
    assert vgg.split() == ["vgg16", "0.983", "1.000", "0.983", "163", "16.5"]
    assert tiny.split() == ["tiny", "0.500", "nan", "0.400", "2", "nan"]
