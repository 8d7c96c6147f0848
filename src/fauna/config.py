"""The one configuration model.

Every default lives here and nowhere else: the CLI, the KFP components and the
pipeline all read a `Config`. `params.yaml` in the repository is this model's
defaults written out (a test keeps them equal), i.e. the paper's settings.
Profiles (`src/fauna/profiles/*.yaml`) are partial overlays on top of it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from fauna.backbones import normalize_name
from fauna.errors import FaunaError
from fauna.metrics import CHAMPION_METRICS, canonical

PROFILES_DIR = Path(__file__).parent / "profiles"

# The paper's 30 classes, in its order (`+` stands for a space, as in the Kaggle CSV).
PAPER_CLASSES = (
    "antelope bat beaver bobcat buffalo chihuahua chimpanzee collie dalmatian "
    "german+shepherd grizzly+bear hippopotamus horse killer+whale mole moose mouse otter ox "
    "persian+cat raccoon rat rhinoceros seal siamese+cat spider+monkey squirrel walrus weasel "
    "wolf"
).split()


AUGMENT_MODES = ("none", "augment", "oversample")


class ConfigError(FaunaError, ValueError):
    """A configuration value is missing, unknown or out of range."""


@dataclass
class DataConfig:
    # Kaggle handle, local folder/archive/label CSV, s3://bucket/prefix or http(s) URL.
    source: str = "kaggle:sanjeetbeniwal/animal-classification-30-classes"
    # The dataset's name in reports and the cache; "" = from the source (the Kaggle dataset,
    # the folder's name, the archive's stem, the S3 prefix's last part, the URL's file stem).
    name: str = ""
    # auto | folders | csv
    layout: str = "auto"
    # csv layout: the columns naming the image and its label; "" = detected from common names
    # (file, filename, path, image, image_id, id / label, class, species, animal, category).
    csv_id_column: str = ""
    csv_label_column: str = ""
    # The label CSV to use when the source holds several (a name inside the source, or a
    # path); "" = the only CSV with an image and a label column.
    labels_csv: str = ""
    # Allowed class names (labels outside are quarantined as unknown); [] = any label found.
    classes: list[str] = field(default_factory=list)
    min_images_per_class: int = 2
    # Pillow's decompression-bomb guard: images above this many pixels are quarantined.
    max_image_pixels: int = 89_478_485
    # Ingest limits, enforced while streaming (a zip bomb or an endless download stops as soon
    # as one is crossed). One image file or archive member: larger ones are quarantined.
    max_file_bytes: int = 100_000_000
    # A whole download, or all the files an archive unpacks to.
    max_dataset_bytes: int = 20_000_000_000
    # Files in a folder, objects under an S3 prefix, or members of an archive.
    max_files: int = 1_000_000
    # Archives: unpacked bytes per compressed byte (a photo dataset is ~1; a bomb is 1000s).
    max_compression_ratio: float = 100.0
    # http(s) downloads: the whole transfer's deadline (seconds); the slowest rate tolerated
    # (bytes/s, 0 = any), judged over each window of `download_rate_window_s` seconds, which
    # is also the longest silence tolerated.
    download_timeout_s: float = 21_600.0
    min_download_bytes_per_s: int = 10_000
    download_rate_window_s: float = 30.0
    # s3://bucket/prefix to keep a content-addressed copy of the raw data ("" = off).
    cache_uri: str = ""


@dataclass
class PreprocessConfig:
    image_size: int = 128
    # crop = the paper's version 2 (shorter side + centre crop); stretch = version 1.
    mode: str = "crop"
    jpeg_quality: int = 95
    images_per_shard: int = 1024
    # 0 = all cores.
    workers: int = 0


@dataclass
class SplitConfig:
    test_fraction: float = 0.15
    val_fraction: float = 0.10
    seed: int = 42


@dataclass
class AugmentConfig:
    # none | augment | oversample
    mode: str = "augment"
    horizontal_flip: bool = True
    rotation: float = 0.1
    zoom: float = 0.1
    translation: float = 0.1
    contrast: float = 0.1
    # oversample: level every class up to this count (0 = the largest class).
    target_count: int = 0
    seed: int = 42


@dataclass
class BackboneTrainConfig:
    """Training settings that may differ per backbone (see `TrainConfig.overrides`).

    With pretrained weights: `head_epochs` with the backbone frozen at `learning_rate`,
    then `fine_tune_epochs` with its top `fine_tune_layers` at `fine_tune_learning_rate`.
    From random weights (`weights: none`): head_epochs + fine_tune_epochs epochs training
    every layer, warm-up then cosine decay from `scratch_learning_rate`.
    """

    batch_size: int = 64
    learning_rate: float = 1e-4
    fine_tune_learning_rate: float = 1e-5
    head_epochs: int = 10
    fine_tune_epochs: int = 90
    # Layers unfrozen for fine-tuning, counted from the top; -1 = all.
    fine_tune_layers: int = 30
    dense_units: list[int] = field(default_factory=lambda: [512, 256])
    dropout: float = 0.5
    l1: float = 0.0
    l2: float = 1e-4
    # Inverse-time decay of the learning rate per step (the paper's Keras `decay`), 0 = off.
    decay: float = 0.0
    # imagenet | none | path or s3:// URI of a weights file (per backbone via overrides).
    weights: str = "imagenet"
    # Peak learning rate when training from random weights (weights: none).
    scratch_learning_rate: float = 1e-3


@dataclass
class TrainConfig(BackboneTrainConfig):
    backbones: list[str] = field(default_factory=lambda: ["vgg16", "resnet50", "inceptionv3"])
    early_stopping_patience: int = 10
    reduce_lr_factor: float = 0.5
    reduce_lr_patience: int = 2
    class_weights: bool = False
    mixed_precision: bool = True
    # Head phase (backbone frozen, no train-time augmentation): backbone features computed
    # once, the head trained on them (docs/performance.md); off = the backbone every epoch.
    head_features_once: bool = True
    seed: int = 42
    # Per-backbone settings by registry name (case-insensitive: `ResNet50` is resnet50).
    overrides: dict[str, dict[str, Any]] = field(
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

    def __post_init__(self) -> None:
        self.overrides = _normalized_overrides(self.overrides)

    def for_backbone(self, name: str) -> BackboneTrainConfig:
        """The base settings with this backbone's overrides applied."""
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(BackboneTrainConfig)}
        key = normalize_name(name)
        return _build(
            BackboneTrainConfig, {**base, **self.overrides.get(key, {})}, f"train.overrides.{key}"
        )


def _normalized_overrides(overrides: Any) -> dict[str, dict[str, Any]]:
    """Override keys as registry names (`ResNet50` -> resnet50); two spellings of one refused."""
    if not isinstance(overrides, dict):
        raise ConfigError(f"train.overrides: expected a mapping, got {overrides!r}")
    normalized: dict[str, dict[str, Any]] = {}
    spelled: dict[str, str] = {}
    for name, settings in overrides.items():
        key = normalize_name(str(name))
        if key in normalized:
            raise ConfigError(
                f"train.overrides names {key} twice ({spelled[key]!r} and {name!r}): keep one"
            )
        if not isinstance(settings, dict):
            raise ConfigError(f"train.overrides.{name}: expected a mapping, got {settings!r}")
        normalized[key], spelled[key] = dict(settings), str(name)
    return normalized


@dataclass
class EvaluateConfig:
    top_confused_pairs: int = 10


@dataclass
class TsneConfig:
    perplexity: float = 30.0
    max_samples: int = 2000
    seed: int = 42


@dataclass
class CompareConfig:
    """The champion policy (fauna.policy), for compare's choice and publish's decision."""

    # macro_f1 | top1 | top3 | weighted_f1 | roc_auc | loss (neg_loss: deprecated, = loss)
    champion_metric: str = "macro_f1"
    # A model must beat the no-skill baselines (chance, majority class) with this
    # confidence (one-sided) to be champion at all.
    eligibility_confidence: float = 0.99
    # A challenger must be better than the champion (or the next backbone) by more than
    # min_gain with this confidence (one-sided, paired on the same test images).
    confidence: float = 0.95
    min_gain: float = 0.0
    bootstrap_resamples: int = 2000
    seed: int = 0


@dataclass
class PipelineConfig:
    bucket: str = "fauna"
    image_cpu: str = "ghcr.io/fauna-ml/fauna-cpu:latest"
    image_gpu: str = "ghcr.io/fauna-ml/fauna-gpu:latest"
    use_gpu: bool = True
    gpu_count: int = 1
    # Empty: the `nvidia.com/gpu` limit alone places the train pod, on any cluster; a
    # cluster-specific label (GKE, EKS, AKS, OpenShift: docs/cluster.md) is opt-in.
    gpu_node_selector: dict[str, str] = field(default_factory=dict)
    gpu_toleration_key: str = "nvidia.com/gpu"
    # docker-registry Secrets (in the run's namespace) that every task pod pulls with.
    image_pull_secrets: list[str] = field(default_factory=list)
    train_cpu: str = "4"
    train_memory: str = "16Gi"
    step_cpu: str = "2"
    step_memory: str = "4Gi"
    step_timeout_seconds: int = 4 * 3600
    train_timeout_seconds: int = 24 * 3600
    # Backbones trained at once (`dsl.ParallelFor` parallelism; 0 = all at once).
    parallelism: int = 0
    # `fauna submit --wait` (and the chart's CronJob) retries a failed run this many
    # times through KFP's retry API: same run id, finished tasks kept, training resumes
    # from its run-scoped checkpoints (docs/cluster.md, "when a GPU node is preempted").
    run_retries: int = 2
    # `fauna submit --wait` stops with the scheduler's reason when a task stays Pending
    # this long (no GPU node, a failing image pull): a Pending pod never fails. 0 = never.
    pending_timeout_seconds: int = 1800
    s3_secret: str = "fauna-s3"
    kaggle_secret: str = "fauna-kaggle"


@dataclass
class ModelRegistryConfig:
    # Kubeflow Model Registry REST URL, "" = off; MODEL_REGISTRY_URL overrides (fauna.registry)
    url: str = ""
    author: str = "fauna"
    timeout_seconds: float = 30.0  # per call: a silent registry never holds publish up


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tsne: TsneConfig = field(default_factory=TsneConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    model_registry: ModelRegistryConfig = field(default_factory=ModelRegistryConfig)

    def __post_init__(self) -> None:
        _check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Config:
        return _build(cls, data or {}, "")

    def merged(self, overlay: dict[str, Any]) -> Config:
        """A copy with `overlay` (a partial nested dict) applied on top."""
        return Config.from_dict(_deep_merge(self.to_dict(), overlay))


def load_config(
    path: str | Path | None = None,
    profile: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Defaults <- YAML file <- profile overlay <- explicit overrides (dotted keys allowed)."""
    cfg = Config()
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        cfg = _merged_file(cfg, p)
    if profile:
        prof = PROFILES_DIR / f"{profile}.yaml"
        if not prof.is_file():
            known = ", ".join(sorted(x.stem for x in PROFILES_DIR.glob("*.yaml")))
            raise ConfigError(f"unknown profile {profile!r} (known: {known})")
        cfg = _merged_file(cfg, prof)
    if overrides:
        cfg = cfg.merged(_undot(overrides))
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
    """One validated config section from a plain dict (what a KFP component receives).

    Built inside a whole default config, so every check that applies to the section runs.
    """
    if name not in {f.name for f in dataclasses.fields(Config)}:
        raise ConfigError(f"unknown config section {name!r}")
    return getattr(Config.from_dict({name: values}), name)


def section_dict(cfg: Config, name: str) -> dict[str, Any]:
    """A config section as a plain dict (for a KFP component's parameter)."""
    return dataclasses.asdict(getattr(cfg, name))


def _undot(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any], where: str = "") -> dict[str, Any]:
    out = _general_beats_earlier_overrides(base, overlay) if where == "train" else dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "overrides":
            out[key] = _deep_merge(out[key], value, key)
        elif key == "overrides" and isinstance(value, dict) and isinstance(out.get(key), dict):
            merged = dict(out[key])
            for name, settings in value.items():
                name = normalize_name(str(name))  # `ResNet50:` overlays resnet50
                merged[name] = {**merged.get(name, {}), **(settings or {})}
            out[key] = merged
        else:
            out[key] = value
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


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) in {where or 'config'}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(names))})"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        dotted = f"{where}.{name}" if where else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value or {}, dotted)
        else:
            kwargs[name] = _coerce(value, hint, dotted)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = getattr(hint, "__origin__", None)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is float and isinstance(value, str):
        value = _float_text(value, where)  # YAML 1.1 reads `1e-4` as text
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"{where}: expected a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected text, got {value!r}")
        return str(value)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = hint.__args__
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


AUGMENT_LAYER_SETTINGS = ("horizontal_flip", "rotation", "zoom", "translation", "contrast")


def check_augment(cfg: AugmentConfig) -> None:
    """The augment section's rules, in one place (the config and the augment step use it)."""
    if cfg.mode not in AUGMENT_MODES:
        raise ConfigError(f"augment.mode must be {'|'.join(AUGMENT_MODES)}, got {cfg.mode!r}")
    if cfg.mode != "none" and not any(getattr(cfg, k) for k in AUGMENT_LAYER_SETTINGS):
        raise ConfigError(
            f"augment.mode={cfg.mode} needs at least one of {', '.join(AUGMENT_LAYER_SETTINGS)} "
            "(or use mode none)"
        )


def _float_text(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None


def _check(cfg: Config) -> None:
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(cfg.data.layout in ("auto", "folders", "csv"), "data.layout must be auto|folders|csv")
    need(cfg.data.min_images_per_class >= 1, "data.min_images_per_class must be >= 1")
    need(
        len(cfg.data.classes) != 1,
        "data.classes must list at least two classes (or none: any label found)",
    )
    for key in ("max_image_pixels", "max_file_bytes", "max_dataset_bytes", "max_files"):
        need(getattr(cfg.data, key) >= 1, f"data.{key} must be >= 1")
    need(cfg.data.max_compression_ratio >= 1, "data.max_compression_ratio must be >= 1")
    need(cfg.data.download_timeout_s > 0, "data.download_timeout_s must be > 0")
    need(cfg.data.min_download_bytes_per_s >= 0, "data.min_download_bytes_per_s must be >= 0")
    need(cfg.data.download_rate_window_s > 0, "data.download_rate_window_s must be > 0")
    need(cfg.preprocess.mode in ("crop", "stretch"), "preprocess.mode must be crop|stretch")
    need(16 <= cfg.preprocess.image_size <= 1024, "preprocess.image_size must be in 16..1024")
    need(1 <= cfg.preprocess.jpeg_quality <= 100, "preprocess.jpeg_quality must be in 1..100")
    need(cfg.preprocess.images_per_shard >= 1, "preprocess.images_per_shard must be >= 1")
    need(0 < cfg.split.test_fraction < 1, "split.test_fraction must be in (0, 1)")
    need(0 <= cfg.split.val_fraction < 1, "split.val_fraction must be in [0, 1)")
    check_augment(cfg.augment)
    need(
        cfg.compare.champion_metric in CHAMPION_METRICS,
        f"compare.champion_metric must be {'|'.join(CHAMPION_METRICS)}, "
        f"got {cfg.compare.champion_metric!r}",
    )
    cfg.compare.champion_metric = canonical(cfg.compare.champion_metric)
    for key in ("confidence", "eligibility_confidence"):
        need(0.5 <= getattr(cfg.compare, key) < 1, f"compare.{key} must be in [0.5, 1)")
    need(cfg.compare.min_gain >= 0, "compare.min_gain must be >= 0")
    need(cfg.compare.bootstrap_resamples >= 100, "compare.bootstrap_resamples must be >= 100")
    need(cfg.pipeline.parallelism >= 0, "pipeline.parallelism must be >= 0 (0 = all at once)")
    _check_train(cfg.train)
    _check_pipeline(cfg.pipeline)


def _check_pipeline(p: PipelineConfig) -> None:
    for key in ("gpu_count", "step_timeout_seconds", "train_timeout_seconds"):
        _need(p, "pipeline", key, getattr(p, key) >= 1, ">= 1")
    for key in ("run_retries", "pending_timeout_seconds"):
        _need(p, "pipeline", key, getattr(p, key) >= 0, ">= 0")
    names = p.image_pull_secrets
    _need(p, "pipeline", "image_pull_secrets", all(str(n).strip() for n in names), "Secret names")


def _check_train(train: TrainConfig) -> None:
    """Every training setting, for the base and each backbone's overrides (one line each).

    Backbone names are checked against the registry where training starts
    (`fauna.backbones.check_names`): listing them here would import Keras.
    """
    if not train.backbones or not all(str(b).strip() for b in train.backbones):
        raise ConfigError(f"train.backbones must name at least one backbone, got {train.backbones}")
    _need(train, "train", "early_stopping_patience", train.early_stopping_patience >= 0, ">= 0")
    _need(train, "train", "reduce_lr_factor", 0 < train.reduce_lr_factor < 1, "in (0, 1)")
    _need(train, "train", "reduce_lr_patience", train.reduce_lr_patience >= 0, ">= 0")
    _check_backbone_settings(train, "train")
    for name in train.overrides:
        _check_backbone_settings(train.for_backbone(name), f"train.overrides.{name}")


def _need(settings: Any, where: str, key: str, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{where}.{key} must be {rule}, got {getattr(settings, key)!r}")


def _check_backbone_settings(b: BackboneTrainConfig, where: str) -> None:
    _need(b, where, "head_epochs", b.head_epochs >= 0, ">= 0")
    _need(b, where, "fine_tune_epochs", b.fine_tune_epochs >= 0, ">= 0")
    if b.head_epochs + b.fine_tune_epochs < 1:
        raise ConfigError(
            f"{where}: head_epochs + fine_tune_epochs must be at least 1, "
            f"got {b.head_epochs} + {b.fine_tune_epochs}"
        )
    for key in ("learning_rate", "fine_tune_learning_rate", "scratch_learning_rate"):
        value = getattr(b, key)
        _need(b, where, key, math.isfinite(value) and value > 0, "a number > 0")
    _need(b, where, "batch_size", b.batch_size >= 1, ">= 1")
    _need(b, where, "dropout", 0 <= b.dropout < 1, "in [0, 1)")
    for key in ("l1", "l2", "decay"):
        value = getattr(b, key)
        _need(b, where, key, math.isfinite(value) and value >= 0, "a number >= 0")
    _need(b, where, "fine_tune_layers", b.fine_tune_layers >= -1, ">= -1 (-1 = all layers)")
    _need(b, where, "dense_units", all(u >= 1 for u in b.dense_units), "a list of sizes >= 1")


def add_arguments(parser: Any) -> None:
    """`fauna config`: show the configuration every other command would use."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run(args: Any, cfg: Config) -> int:
    print(json.dumps(cfg.to_dict(), indent=2) if args.json else cfg.to_yaml(), end="")
    return 0


def params_json_schema() -> dict[str, Any]:
    """The config model as a JSON schema (the chart's `params`: values.schema.json).

    Checks what `Config.from_dict` checks by type: known sections and keys, booleans,
    numbers, lists, and the enumerated choices that have constants; ranges and
    cross-field rules stay with `_check`. tests/test_chart.py keeps the chart's copy
    equal to this.
    """
    choices = {("augment", "mode"): AUGMENT_MODES, ("compare", "champion_metric"): CHAMPION_METRICS}

    def of(hint: Any, where: tuple[str, ...]) -> dict[str, Any]:
        origin = getattr(hint, "__origin__", None)
        if dataclasses.is_dataclass(hint):
            hints = get_type_hints(hint)
            props = {f.name: of(hints[f.name], (*where, f.name)) for f in dataclasses.fields(hint)}
            return {"type": "object", "additionalProperties": False, "properties": props}
        if where in choices:
            return {"enum": list(choices[where])}
        if where[-2:] == ("train", "overrides"):  # per-backbone settings (`for_backbone`)
            section = of(BackboneTrainConfig, where)
            return {
                "type": "object",
                "additionalProperties": {**section, "type": ["object", "null"]},
            }
        if hint is bool:
            return {"type": "boolean"}
        if hint is int:
            return {"type": "integer"}
        if hint is float:
            return {"type": "number"}
        if hint is str:  # `_coerce` turns numbers into text and null into ""
            return {"type": ["string", "number", "null"]}
        if origin is list:
            return {"type": "array", "items": of(hint.__args__[0], where)}
        if origin is dict:
            return {"type": "object", "additionalProperties": of(hint.__args__[1], where)}
        return {}

    schema = of(Config, ())
    schema["description"] = "pipeline parameters in the params.yaml shape (fauna.config)"
    return schema
