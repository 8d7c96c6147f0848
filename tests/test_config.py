from pathlib import Path

import pytest
import yaml

from fauna.config import Config, ConfigError, load_config, parse_override

ROOT = Path(__file__).resolve().parents[1]


def test_params_yaml_is_the_model_defaults():
    """params.yaml is the paper's settings written out: one source of defaults."""
    assert yaml.safe_load((ROOT / "params.yaml").read_text()) == Config().to_dict()


def test_paper_settings():
    cfg = load_config(ROOT / "params.yaml")
    assert cfg.preprocess.image_size == 128 and cfg.preprocess.mode == "crop"
    assert cfg.split.test_fraction == 0.15
    assert cfg.train.backbones == ["vgg16", "resnet50", "inceptionv3"]
    vgg, resnet, inception = (cfg.train.for_backbone(b) for b in cfg.train.backbones)
    assert resnet.learning_rate == pytest.approx(10 * vgg.learning_rate)
    assert resnet.batch_size < vgg.batch_size and resnet.l1 == resnet.l2 == 0
    assert (inception.learning_rate, inception.l1, inception.batch_size) == (1e-4, 1e-4, 32)


def test_layers_apply_in_order(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("preprocess: {image_size: 96}\ntrain: {overrides: {resnet50: {batch_size: 8}}}\n")
    cfg = load_config(f, "smoke", {"preprocess.image_size": 100, "split.seed": 7})
    assert cfg.preprocess.image_size == 100  # --set wins over profile and file
    assert cfg.split.seed == 7
    assert cfg.train.weights == "none"  # from the smoke profile
    assert cfg.train.for_backbone("resnet50").batch_size == 16  # profile over file
    assert cfg.train.for_backbone("inceptionv3").l1 == 1e-4  # kept from the defaults


@pytest.mark.parametrize(
    "overlay, message",
    [
        ({"preprocess": {"imagesize": 1}}, "unknown key"),
        ({"preprocess": {"image_size": "big"}}, "expected a number"),
        ({"preprocess": {"mode": "squash"}}, "crop|stretch"),
        ({"split": {"test_fraction": 1.5}}, "test_fraction"),
        ({"train": {"overrides": {"vgg16": {"batchsize": 2}}}}, "unknown key"),
    ],
)
def test_bad_values_are_clear(overlay, message):
    with pytest.raises(ConfigError, match=message):
        Config().merged(overlay)


def test_parse_override():
    assert parse_override("train.backbones=[vgg16]") == ("train.backbones", ["vgg16"])
    with pytest.raises(ConfigError):
        parse_override("nonsense")


def test_unknown_profile():
    with pytest.raises(ConfigError, match="unknown profile 'nope'.*smoke"):
        load_config(profile="nope")


@pytest.mark.parametrize(
    "text, where, problem",
    [
        ("data:\n  source: x\n   name: y\n", ":3:8", "mapping values are not allowed here"),
        ("train:\n  backbones: [vgg16, resnet50\n", ":3:1", "expected ',' or ']'"),
        ("data: {source: 'x}\n", ":2:1", "found unexpected end of stream"),
        ("- data\n- train\n", ":1:1", "expected a mapping of sections"),
    ],
)
def test_a_malformed_config_file_is_one_line_with_file_line_column(
    tmp_path: Path, capsys, text: str, where: str, problem: str
):
    from fauna.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert main(["config", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith(f"fauna config: error: {bad}{where}: ")
    assert problem in err[0]


def test_an_unreadable_config_file_or_key_is_one_line(tmp_path: Path, capsys):
    from fauna.cli import main

    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("data:\n  sorce: x\n")
    for path, expected in ((binary, "cannot read config file"), (unknown, "sorce")):
        assert main(["config", "--config", str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0] and expected in err[0]
    assert main(["config", "--set", "data.classes=[a, b"]) == 2
    assert "not valid YAML" in capsys.readouterr().err
