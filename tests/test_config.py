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
