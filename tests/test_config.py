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
        ({"preprocess": {"imagesize": 1}}, "unknown key in preprocess: imagesize (did you mean"),
        ({"trian": {}}, "unknown key in config: trian (did you mean train?)"),
        (
            {"preprocess": {"image_size": "big"}},
            "preprocess.image_size: Input should be a valid integer, unable to parse string "
            "as an integer, got 'big'",
        ),
        ({"preprocess": {"image_size": 12.5}}, "preprocess.image_size: Input should be a valid"),
        ({"pipeline": {"use_gpu": "maybe"}}, "pipeline.use_gpu: Input should be a valid boolean"),
        (
            {"preprocess": {"mode": "squash"}},
            "preprocess.mode: Input should be 'crop' or 'stretch'",
        ),
        ({"split": {"test_fraction": 1.5}}, "split.test_fraction: Input should be less than 1"),
        ({"train": {"dense_units": [64, 0]}}, "train.dense_units[1]: Input should be greater"),
        (
            {"train": {"overrides": {"vgg16": {"batchsize": 2}}}},
            "unknown key in train.overrides.vgg16: batchsize",
        ),
        ({"train": {"overrides": {"vgg16": {"l2": -1}}}}, "train.overrides.vgg16.l2: Input"),
        ({"pipeline": {"image_pull_secrets": [" "]}}, "pipeline.image_pull_secrets[0]: String"),
    ],
)
def test_bad_values_are_one_line_naming_the_setting(overlay, message):
    """pydantic's message, led by the dotted setting, in one line (unknown keys: a guess)."""
    with pytest.raises(ConfigError) as caught:
        Config().merged(overlay)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_sections_built_directly_fail_the_same_way():
    """A section built in code (a component, `dataclasses.replace`) is checked too."""
    from fauna.config import AugmentConfig, TrainConfig

    with pytest.raises(ConfigError, match=r"^augment.mode: Input should be 'none', 'augment'"):
        AugmentConfig(mode="mirror")
    with pytest.raises(ConfigError, match=r"^train.overrides: Input should be a valid dict"):
        TrainConfig(overrides=[1])
    with pytest.raises(ConfigError, match=r"^unknown key in train: bach_size \(did you mean"):
        TrainConfig(bach_size=1)


def test_text_settings_take_numbers_and_null_as_text(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("pipeline: {train_cpu: 8, gpu_node_selector: {pool: 1}}\ndata: {name:}\ntrain:\n")
    cfg = load_config(f)
    assert (cfg.pipeline.train_cpu, cfg.pipeline.gpu_node_selector) == ("8", {"pool": "1"})
    assert cfg.data.name == "" and cfg.train == Config().train  # `train:` alone changes nothing


@pytest.mark.parametrize(
    "sets, message",
    [
        (["train.bach_size=8"], "unknown key in train: bach_size (did you mean batch_size?)"),
        (["train.batch_size=lots"], "train.batch_size: Input should be a valid integer"),
        (["train.overrides.vgg16.dropout=2"], "train.overrides.vgg16.dropout: Input should be"),
        (["split=3"], "split: Input should be a dictionary or an instance of SplitConfig"),
        (["split=3", "split.seed=1"], "--set split.seed: split is also set to a value"),
    ],
)
def test_a_bad_dotted_override_is_one_line_naming_the_key(capsys, sets, message):
    from fauna.cli import main

    assert main(["config", *(arg for s in sets for arg in ("--set", s))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"fauna config: error: {message}"), err


def test_config_schema_is_printed(capsys):
    import json

    from fauna.cli import main
    from fauna.config import params_json_schema

    assert main(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == params_json_schema() and "$defs" not in json.dumps(schema)
    train = schema["properties"]["train"]["properties"]
    assert train["batch_size"] == {"type": "integer", "minimum": 1}
    assert train["overrides"]["additionalProperties"]["properties"]["batch_size"]["minimum"] == 1


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
