"""The one configuration model: every default lives here, and the CLI, the KFP components
and the pipeline all read a `Config`. `params.yaml` is its defaults written out (a test keeps
them equal): the paper's settings. Profiles (`profiles/*.yaml`) are partial overlays on it.

The sections are pydantic v2 dataclasses (`dataclasses.fields/asdict/replace` keep working):
pydantic checks types, ranges and choices, and an invalid value, however the section is
built, is one `ConfigError` line naming the setting."""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass

from fauna.errors import FaunaError
from fauna.model.backbones import normalize_name
from fauna.score.metrics import CHAMPION_METRICS, canonical

PROFILES_DIR = Path(__file__).parent / "profiles"

# The paper's 30 classes, in its order (`+` stands for a space, as in the Kaggle CSV).
PAPER_CLASSES = (
    "antelope bat beaver bobcat buffalo chihuahua chimpanzee collie dalmatian "
    "german+shepherd grizzly+bear hippopotamus horse killer+whale mole moose mouse otter ox "
    "persian+cat raccoon rat rhinoceros seal siamese+cat spider+monkey squirrel walrus weasel "
    "wolf"
).split()


AUGMENT_MODES = ("none", "augment", "oversample")
AUGMENT_LAYER_SETTINGS = ("horizontal_flip", "rotation", "zoom", "translation", "contrast")


class ConfigError(FaunaError, ValueError):
    """A configuration value is missing, unknown or out of range."""


def _text(value: Any) -> Any:
    """YAML reads `name:` as null and `train_cpu: 4` as a number; both are meant as text."""
    if value is None:
        return ""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


# Text settings: a number or null in a file is taken as its text (as the chart's schema says).
Text = Annotated[
    str, BeforeValidator(_text), WithJsonSchema({"type": ["string", "number", "null"]})
]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]  # not blank


def _section(name: str):
    """A config section: a pydantic dataclass that refuses unknown keys and whose
    constructor (also `dataclasses.replace`) raises one-line `ConfigError`s (built at once:
    with `defer_build`, pydantic would replace the wrapped `__init__` when it builds)."""

    def wrap(cls: type) -> type:
        cls = pydantic_dataclass(cls, config=ConfigDict(extra="forbid"))
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise ConfigError(_one_line(exc, cls, name)) from None

        cls.__init__ = __init__
        return cls

    return wrap


@_section("data")
class DataConfig:
    # Kaggle handle, local folder/archive/label CSV, s3://bucket/prefix or http(s) URL.
    source: Text = "kaggle:sanjeetbeniwal/animal-classification-30-classes"
    # The dataset's name in reports and the cache; "" = from the source (the Kaggle dataset,
    # the folder's name, the archive's stem, the S3 prefix's last part, the URL's file stem).
    name: Text = ""
    layout: Literal["auto", "folders", "csv"] = "auto"
    # csv layout: the columns naming the image and its label; "" = detected from common names
    # (file, filename, path, image, image_id, id / label, class, species, animal, category).
    csv_id_column: Text = ""
    csv_label_column: Text = ""
    # The label CSV to use when the source holds several (a name inside the source, or a
    # path); "" = the only CSV with an image and a label column.
    labels_csv: Text = ""
    # Allowed class names (labels outside are quarantined as unknown); [] = any label found.
    classes: list[Text] = Field(default_factory=list)
    min_images_per_class: int = Field(2, ge=1)
    # Pillow's decompression-bomb guard: images above this many pixels are quarantined.
    max_image_pixels: int = Field(89_478_485, ge=1)
    # Ingest limits, enforced while streaming (a zip bomb or an endless download stops as soon
    # as one is crossed). One image file or archive member: larger ones are quarantined.
    max_file_bytes: int = Field(100_000_000, ge=1)
    # A whole download, or all the files an archive unpacks to.
    max_dataset_bytes: int = Field(20_000_000_000, ge=1)
    # Files in a folder, objects under an S3 prefix, or members of an archive.
    max_files: int = Field(1_000_000, ge=1)
    # Archives: unpacked bytes per compressed byte (a photo dataset is ~1; a bomb is 1000s).
    max_compression_ratio: float = Field(100.0, ge=1)
    # http(s) downloads: the whole transfer's deadline (seconds); the slowest rate tolerated
    # (bytes/s, 0 = any), judged over each window of `download_rate_window_s` seconds, which
    # is also the longest silence tolerated.
    download_timeout_s: float = Field(21_600.0, gt=0)
    min_download_bytes_per_s: int = Field(10_000, ge=0)
    download_rate_window_s: float = Field(30.0, gt=0)
    # s3://bucket/prefix to keep a content-addressed copy of the raw data ("" = off).
    cache_uri: Text = ""

    @field_validator("classes")
    @classmethod
    def _not_one_class(cls, classes: list[str]) -> list[str]:
        if len(classes) == 1:
            raise ValueError(f"must list at least two classes (or none: any label), got {classes}")
        return classes


@_section("preprocess")
class PreprocessConfig:
    image_size: int = Field(128, ge=16, le=1024)
    # crop = the paper's version 2 (shorter side + centre crop); stretch = version 1.
    mode: Literal["crop", "stretch"] = "crop"
    jpeg_quality: int = Field(95, ge=1, le=100)
    images_per_shard: int = Field(1024, ge=1)
    # 0 = all cores.
    workers: int = 0


@_section("split")
class SplitConfig:
    test_fraction: float = Field(0.15, gt=0, lt=1)
    val_fraction: float = Field(0.10, ge=0, lt=1)
    seed: int = 42


@_section("augment")
class AugmentConfig:
    mode: Literal[AUGMENT_MODES] = "augment"
    horizontal_flip: bool = True
    rotation: float = 0.1
    zoom: float = 0.1
    translation: float = 0.1
    contrast: float = 0.1
    # oversample: level every class up to this count (0 = the largest class).
    target_count: int = 0
    seed: int = 42

    @model_validator(mode="after")
    def _checked(self) -> AugmentConfig:
        check_augment(self)
        return self


@_section("train")
class BackboneTrainConfig:
    """Training settings that may differ per backbone (see `TrainConfig.overrides`).

    With pretrained weights: `head_epochs` with the backbone frozen at `learning_rate`,
    then `fine_tune_epochs` with its top `fine_tune_layers` at `fine_tune_learning_rate`.
    From random weights (`weights: none`): head_epochs + fine_tune_epochs epochs training
    every layer, warm-up then cosine decay from `scratch_learning_rate`.
    """

    batch_size: int = Field(64, ge=1)
    learning_rate: float = Field(1e-4, gt=0, allow_inf_nan=False)
    fine_tune_learning_rate: float = Field(1e-5, gt=0, allow_inf_nan=False)
    head_epochs: int = Field(10, ge=0)
    fine_tune_epochs: int = Field(90, ge=0)
    # Layers unfrozen for fine-tuning, counted from the top; -1 = all.
    fine_tune_layers: int = Field(30, ge=-1)
    dense_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [512, 256])
    dropout: float = Field(0.5, ge=0, lt=1)
    l1: float = Field(0.0, ge=0, allow_inf_nan=False)
    l2: float = Field(1e-4, ge=0, allow_inf_nan=False)
    # Inverse-time decay of the learning rate per step (the paper's Keras `decay`), 0 = off.
    decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    # imagenet | none | path or s3:// URI of a weights file (per backbone via overrides).
    weights: Text = "imagenet"
    # Peak learning rate when training from random weights (weights: none).
    scratch_learning_rate: float = Field(1e-3, gt=0, allow_inf_nan=False)

    @model_validator(mode="after")
    def _some_epochs(self) -> BackboneTrainConfig:
        if self.head_epochs + self.fine_tune_epochs < 1:
            raise ValueError(
                f"head_epochs + fine_tune_epochs must be at least 1, "
                f"got {self.head_epochs} + {self.fine_tune_epochs}"
            )
        return self


@_section("train")
class TrainConfig(BackboneTrainConfig):
    # Registry names; checked against the registry where training starts
    # (`fauna.model.backbones.check_names`): listing them here would import Keras.
    backbones: list[Name] = Field(
        default_factory=lambda: ["vgg16", "resnet50", "inceptionv3"], min_length=1
    )
    early_stopping_patience: int = Field(10, ge=0)
    reduce_lr_factor: float = Field(0.5, gt=0, lt=1)
    reduce_lr_patience: int = Field(2, ge=0)
    class_weights: bool = False
    mixed_precision: bool = True
    # Frozen-backbone head phase: features computed once (docs/training.md); with train-time
    # augmentation only if head_feature_views K > 0: K augmented views, epoch e on view e mod K.
    head_features_once: bool = True
    head_feature_views: int = Field(0, ge=0, le=100)
    seed: int = 42
    # Per-backbone settings by registry name (case-insensitive: `ResNet50` is resnet50).
    overrides: dict[str, dict[str, Any]] = Field(
        default_factory=lambda: {
            # The paper: smaller batch, no regularisation, fewer epochs, LR 10x VGG's.
            "resnet50": {
                "batch_size": 32,
                "learning_rate": 1e-3,
                "fine_tune_learning_rate": 1e-4,
                "l2": 0.0,
                "dropout": 0.2,
                "fine_tune_epochs": 40,
            },
            # From random weights, VGG (no BatchNorm) needs a 10x lower rate than the others.
            "vgg16": {"scratch_learning_rate": 1e-4},
            "vgg19": {"scratch_learning_rate": 1e-4},
            # The paper: all layers trainable, LR 1e-4, decay 1e-7, L1 1e-4, batch 32.
            "inceptionv3": {
                "batch_size": 32,
                "learning_rate": 1e-4,
                "fine_tune_learning_rate": 1e-4,
                "fine_tune_layers": -1,
                "l1": 1e-4,
                "l2": 0.0,
                "decay": 1e-7,
                "fine_tune_epochs": 40,
            },
        }
    )

    @field_validator("overrides", mode="before")
    @classmethod
    def _registry_names(cls, overrides: Any) -> Any:
        """Override keys as registry names (`ResNet50` -> resnet50); two spellings refused."""
        if not isinstance(overrides, dict):
            return overrides  # pydantic says what is wrong
        normalized: dict[str, Any] = {}
        spelled: dict[str, str] = {}
        for name, settings in overrides.items():
            key = normalize_name(str(name))
            if key in normalized:
                raise ValueError(f"names {key} twice ({spelled[key]!r} and {name!r}): keep one")
            normalized[key], spelled[key] = {} if settings is None else settings, str(name)
        return normalized

    @model_validator(mode="after")
    def _overrides_valid(self) -> TrainConfig:
        for name in self.overrides:
            self.for_backbone(name)
        return self

    def for_backbone(self, name: str) -> BackboneTrainConfig:
        """The base settings with this backbone's overrides applied."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(BackboneTrainConfig)}
        key = normalize_name(name)
        return _validated(
            BackboneTrainConfig, {**base, **self.overrides.get(key, {})}, f"train.overrides.{key}"
        )


@_section("evaluate")
class EvaluateConfig:
    top_confused_pairs: int = 10


@_section("tsne")
class TsneConfig:
    perplexity: float = 30.0
    max_samples: int = 2000
    seed: int = 42


@_section("compare")
class CompareConfig:
    """The champion policy (fauna.score.policy), for compare's choice and publish's decision."""

    # neg_loss: deprecated, = loss
    champion_metric: Literal[CHAMPION_METRICS] = "macro_f1"
    # A model must beat the no-skill baselines (chance, majority class) with this
    # confidence (one-sided) to be champion at all.
    eligibility_confidence: float = Field(0.99, ge=0.5, lt=1)
    # A challenger must be better than the champion (or the next backbone) by more than
    # min_gain with this confidence (one-sided, paired on the same test images).
    confidence: float = Field(0.95, ge=0.5, lt=1)
    min_gain: float = Field(0.0, ge=0)
    bootstrap_resamples: int = Field(2000, ge=100)
    seed: int = 0

    @field_validator("champion_metric")
    @classmethod
    def _canonical(cls, metric: str) -> str:
        return canonical(metric)


@_section("pipeline")
class PipelineConfig:
    bucket: Text = "fauna"
    image_cpu: Text = "ghcr.io/fauna-ml/fauna-cpu:latest"
    image_gpu: Text = "ghcr.io/fauna-ml/fauna-gpu:latest"
    use_gpu: bool = True
    gpu_count: int = Field(1, ge=1)
    # Empty: the `nvidia.com/gpu` limit alone places the train pod, on any cluster; a
    # cluster-specific label (GKE, EKS, AKS, OpenShift: docs/cluster.md) is opt-in.
    gpu_node_selector: dict[str, Text] = Field(default_factory=dict)
    gpu_toleration_key: Text = "nvidia.com/gpu"
    # docker-registry Secrets (in the run's namespace) that every task pod pulls with.
    image_pull_secrets: list[Name] = Field(default_factory=list)
    train_cpu: Text = "4"
    train_memory: Text = "16Gi"
    step_cpu: Text = "2"
    step_memory: Text = "4Gi"
    step_timeout_seconds: int = Field(4 * 3600, ge=1)
    train_timeout_seconds: int = Field(24 * 3600, ge=1)
    # Backbones trained at once (`dsl.ParallelFor` parallelism; 0 = all at once).
    parallelism: int = Field(0, ge=0)
    # `fauna submit --wait` (and the chart's CronJob) retries a failed run this many
    # times through KFP's retry API: same run id, finished tasks kept, training resumes
    # from its run-scoped checkpoints (docs/cluster.md, "when a GPU node is preempted").
    run_retries: int = Field(2, ge=0)
    # `fauna submit --wait` stops with the scheduler's reason when a task stays Pending
    # this long (no GPU node, a failing image pull): a Pending pod never fails. 0 = never.
    pending_timeout_seconds: int = Field(1800, ge=0)
    s3_secret: Text = "fauna-s3"
    kaggle_secret: Text = "fauna-kaggle"


@_section("model_registry")
class ModelRegistryConfig:
    # Kubeflow Model Registry REST URL, "" = off; MODEL_REGISTRY_URL overrides
    url: Text = ""
    author: Text = "fauna"
    timeout_seconds: float = 30.0  # per call: a silent registry never holds publish up


@_section("")
class Config:
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tsne: TsneConfig = Field(default_factory=TsneConfig)
    compare: CompareConfig = Field(default_factory=CompareConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    model_registry: ModelRegistryConfig = Field(default_factory=ModelRegistryConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Config:
        return _validated(cls, data or {}, "")

    def merged(self, overlay: dict[str, Any]) -> Config:
        """A copy with `overlay` (a partial nested dict) applied on top."""
        return Config.from_dict(_deep_merge(self.to_dict(), overlay))


def _validated(cls: type, data: Any, where: str) -> Any:
    """`cls` built from a plain mapping; any problem is one `ConfigError` line."""
    try:
        return cls.__pydantic_validator__.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, cls, where)) from None


def _one_line(exc: ValidationError, cls: type, where: str) -> str:
    """pydantic's first error as one line: the dotted setting, its message, the value."""
    error = exc.errors(include_url=False)[0]
    loc = [f"[{p}]" if isinstance(p, int) else str(p) for p in error["loc"]]
    dotted = ".".join(filter(None, [where, *loc])).replace(".[", "[")
    if error["type"] == "value_error":  # our own rules; a nested ConfigError is a whole line
        cause = error["ctx"]["error"]
        return str(cause) if isinstance(cause, ConfigError) else f"{dotted or 'config'}: {cause}"
    if error["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
        *parent, key = dotted.split(".")
        known = _known_keys(cls, loc[:-1])
        close = difflib.get_close_matches(key, known, n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(known))}"
        return f"unknown key in {'.'.join(parent) or 'config'}: {key} ({hint})"
    return f"{dotted or 'config'}: {error['msg']}, got {error['input']!r}"


def _known_keys(cls: type, loc: list[str]) -> list[str]:
    """The setting names of the section at `loc` under `cls` (for "did you mean")."""
    for part in loc:
        field = getattr(cls, "__pydantic_fields__", {}).get(part)
        if field is None:
            return []
        cls = field.annotation
    return [f.name for f in dataclasses.fields(cls)] if dataclasses.is_dataclass(cls) else []


def load_config(
    path: str | Path | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- YAML file <- profile overlay <- explicit overrides (dotted keys allowed)."""
    cfg = Config()
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"config file not found: {path}")
        cfg = _merged_file(cfg, Path(path))
    if profile:
        prof = PROFILES_DIR / f"{profile}.yaml"
        if not prof.is_file():
            known = ", ".join(sorted(x.stem for x in PROFILES_DIR.glob("*.yaml")))
            raise ConfigError(f"unknown profile {profile!r} (known: {known})")
        cfg = _merged_file(cfg, prof)
    if overrides:
        cfg = cfg.merged(undot(overrides))
    return cfg


def _merged_file(cfg: Config, path: Path) -> Config:
    """`cfg` with a YAML file on top; any problem is one line naming the file."""
    data = read_yaml(path)
    try:
        return cfg.merged(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    """A config file's mapping, or one line: the file, line and column of what is wrong."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"cannot read config file {path}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = " ".join(filter(None, (exc.context, exc.problem)))
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: malformed YAML: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{path}:1:1: expected a mapping of sections (data:, train:, ...), "
            f"got {type(data).__name__}"
        )
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=3` -> ("train.epochs", 3); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override must look like section.key=value, got {text!r}")
    key, value = text.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(value)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ConfigError(f"--set {text}: the value is not valid YAML ({problem})") from None


def section(name: str, values: dict[str, Any]) -> Any:
    """One validated section from a plain dict (what a KFP component receives), built
    inside a whole default config so that every check on the section runs."""
    return getattr(Config.from_dict({name: values}), name)


def section_dict(cfg: Config, name: str) -> dict[str, Any]:
    """A config section as a plain dict (for a KFP component's parameter)."""
    return dataclasses.asdict(getattr(cfg, name))


def undot(flat: dict[str, Any]) -> dict[str, Any]:
    """Dotted overrides as a nested overlay: {"train.seed": 1} -> {"train": {"seed": 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, last = key.split(".")
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                set_as = ".".join(parents[: i + 1])
                raise ConfigError(f"--set {key}: {set_as} is also set to a value, not a section")
        node[last] = value
    return out


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = _general_beats_earlier_overrides(base, overlay) if where == "train" else dict(base)
    for key, value in overlay.items():
        if where == "train" and key == "overrides" and isinstance(value, dict):
            value = {normalize_name(str(n)): v for n, v in value.items()}  # `ResNet50:` = resnet50
        before = out.get(key)
        if value is None and isinstance(before, dict):
            continue  # an empty `train:` or `resnet50:` changes nothing
        both = isinstance(value, dict) and isinstance(before, dict)
        out[key] = _deep_merge(before, value, key) if both else value
    return out


def _general_beats_earlier_overrides(train: dict[str, Any], overlay: dict[str, Any]) -> dict:
    """A general `train.X` of a later layer applies to every backbone: it clears the
    per-backbone `train.overrides.<b>.X` of the layers before it (params.yaml's defaults,
    a --config file, a profile), so `--set train.batch_size=16` trains resnet50 with 16.
    A per-backbone setting given in the same layer, or a later one, still wins."""
    general = set(overlay) & {f.name for f in dataclasses.fields(BackboneTrainConfig)}
    overrides = train.get("overrides")
    if not general or not isinstance(overrides, dict):
        return dict(train)
    kept = {
        name: {k: v for k, v in (settings or {}).items() if k not in general}
        for name, settings in overrides.items()
    }
    return {**train, "overrides": kept}


def check_augment(cfg: AugmentConfig) -> None:
    """The augment section's rules, in one place (the config and the augment step use it)."""
    if cfg.mode != "none" and not any(getattr(cfg, k) for k in AUGMENT_LAYER_SETTINGS):
        raise ConfigError(
            f"augment.mode={cfg.mode} needs at least one of {', '.join(AUGMENT_LAYER_SETTINGS)} "
            "(or use mode none)"
        )


def add_arguments(parser: Any) -> None:
    """`fauna config`: show the configuration every other command would use."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    parser.add_argument("--schema", action="store_true", help="print the model's JSON schema")


def run(args: Any, cfg: Config) -> int:
    if args.schema:
        print(json.dumps(params_json_schema(), indent=2))
    else:
        print(json.dumps(cfg.to_dict(), indent=2) if args.json else cfg.to_yaml(), end="")
    return 0


def params_json_schema() -> dict[str, Any]:
    """The config model as a JSON schema (the chart's `params`: values.schema.json, kept
    equal by tests/test_chart.py): pydantic's, with its `$defs` inlined (under `params`,
    `#/$defs/...` would not resolve), without titles, defaults and descriptions (no setting
    has those names); `train.overrides` entries are partial per-backbone settings."""
    raw = TypeAdapter(Config).json_schema()
    defs = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, list):
            return [inline(item) for item in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
        return {k: inline(v) for k, v in node.items() if k not in _SCHEMA_NOISE}

    schema = inline(raw)
    backbone = inline(TypeAdapter(BackboneTrainConfig).json_schema())
    train = schema["properties"]["train"]["properties"]
    train["overrides"] = {
        "type": "object",
        "additionalProperties": {**backbone, "type": ["object", "null"]},
    }
    schema["description"] = "pipeline parameters in the params.yaml shape (fauna.config)"
    return schema


_SCHEMA_NOISE = ("title", "default", "description", "required")
