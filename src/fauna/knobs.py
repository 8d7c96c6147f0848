"""The run knobs, each declared once: what a user changes per run.

From `KNOBS` come the KFP pipeline parameters (`pipelines/pipeline.py`), the flags of
`fauna submit`, `fauna schedule` and `fauna local-run`, and the table in
docs/pipeline.md (`markdown_table`, kept current by a test). A knob's default is the
value at its config path (params.yaml), so `--config`/`--profile`/`--set` move it.

Adding a knob: one entry here; a train knob (a `train.X` setting) also needs its
parameter in `components/train.py`, typed by hand there because KFP builds the component
from its source (tests/test_pipeline_compile.py compares the two and says what to change).
The `source` knob's help lists the kinds of source from `fauna.sources.SOURCES`.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from typing import Any

from fauna.config import AUGMENT_MODES, Config, ConfigError, TrainConfig, undot
from fauna.score.metrics import CHAMPION_METRICS
from fauna.sources import described as described_sources

# KFP parameter type names as the compiled YAML and the UI show them.
KFP_TYPES = {
    str: "STRING",
    int: "NUMBER_INTEGER",
    float: "NUMBER_DOUBLE",
    list: "LIST",
    dict: "STRUCT",
}
_METAVARS = {int: "N", float: "X", list: "A,B", dict: "JSON"}
_TYPE_WORDS = {str: "string", int: "integer", float: "number", list: "list", dict: "JSON object"}


@dataclass(frozen=True)
class Knob:
    """One run knob. `path` is the config setting it stands for (None: a value of its own,
    `default` then). `compiled`: it shapes the graph, so it is a config setting applied
    before compiling, not a run parameter (KFP fixes `ParallelFor(parallelism)` at compile
    time). `env`: the variable `make local-run` reads for it."""

    name: str
    type: type
    help: str
    path: str | None = None
    default: Any = None
    choices: tuple[str, ...] = ()
    env: str | None = None
    compiled: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def default_in(self, cfg: Config) -> Any:
        """The knob's default under `cfg` (the value at its config path)."""
        if self.path is None:
            return self.default
        node: Any = cfg
        for part in self.path.split("."):
            node = getattr(node, part)
        return _plain(node)

    def parse(self, text: str) -> Any:
        """A flag's or variable's text as the knob's type (argparse reports errors)."""
        if self.type is list:
            return [item.strip() for item in text.split(",") if item.strip()]
        if self.type is dict:
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise argparse.ArgumentTypeError("expected a JSON object")
            return value
        return self.type(text)

    def text(self, value: Any) -> str:
        """A value as its flag's text (the inverse of `parse`)."""
        if self.type is list:
            return ",".join(str(item) for item in value)
        if self.type is dict:
            return json.dumps(value, separators=(",", ":"))
        return str(value)


_MISSING = object()


def _plain(value: Any) -> Any:
    """A config value as a plain JSON value (lists and dicts copied)."""
    return json.loads(json.dumps(value))


KNOBS: tuple[Knob, ...] = (
    Knob(
        "source",
        str,
        "where ingest reads the data: " + described_sources(),
        path="data.source",
        env="DATA",
    ),
    Knob(
        "backbones",
        list,
        "the backbones trained in parallel (as a flag: comma-separated, e.g. "
        "resnet50,efficientnetv2b0)",
        "train.backbones",
        env="BACKBONES",
    ),
    Knob(
        "image_size",
        int,
        "pixels per side after preprocessing",
        "preprocess.image_size",
        env="IMAGE_SIZE",
    ),
    Knob(
        "augment_mode",
        str,
        "how the train split is balanced/augmented",
        "augment.mode",
        choices=AUGMENT_MODES,
    ),
    Knob(
        "epochs",
        int,
        "total epochs per backbone (0 = the configured ones, per backbone)",
        default=0,
        env="EPOCHS",
    ),
    Knob("batch_size", int, "images per training step", "train.batch_size"),
    Knob(
        "learning_rate",
        float,
        "learning rate of the head epochs (pretrained weights)",
        "train.learning_rate",
    ),
    Knob(
        "fine_tune_learning_rate",
        float,
        "learning rate of the fine-tuning epochs (pretrained weights)",
        "train.fine_tune_learning_rate",
    ),
    Knob(
        "scratch_learning_rate",
        float,
        "peak learning rate from random weights (weights none)",
        "train.scratch_learning_rate",
    ),
    Knob(
        "fine_tune_layers",
        int,
        "layers unfrozen for fine-tuning, from the top (-1 = all)",
        "train.fine_tune_layers",
    ),
    Knob(
        "weights",
        str,
        "imagenet, none, or a weights file path or s3:// URI",
        "train.weights",
    ),
    Knob(
        "backbone_overrides",
        dict,
        'per-backbone settings as JSON, e.g. {"resnet50": {"batch_size": 32}}: an entry '
        "you change or add wins for its backbone; a knob you change wins over the entries "
        "you left as configured",
        "train.overrides",
    ),
    Knob(
        "gpus_per_task",
        int,
        "GPUs per training task (pipeline.use_gpu): more than one trains one replica on "
        "each (MirroredStrategy), batch_size per replica, learning rates scaled",
        "pipeline.gpu_count",
    ),
    Knob(
        "champion_metric",
        str,
        "what crowns a model",
        "compare.champion_metric",
        choices=CHAMPION_METRICS,
    ),
    Knob(
        "parallelism",
        int,
        "backbones trained at once (0 = all at once); fixed when the pipeline is compiled",
        "pipeline.parallelism",
        compiled=True,
    ),
)
BY_NAME = {knob.name: knob for knob in KNOBS}
# The pipeline parameters, in the order the KFP UI shows them.
RUN_KNOBS = tuple(knob for knob in KNOBS if not knob.compiled)
_OVERRIDES = "backbone_overrides"  # the knob holding `train.overrides`
# Knobs that set one training setting (`train.X` of BackboneTrainConfig) or the overrides.
TRAIN_KNOBS = tuple(
    knob
    for knob in RUN_KNOBS
    if knob.path and knob.path.startswith("train.") and knob.name != "backbones"
)


def run_arguments(cfg: Config, **values: Any) -> dict[str, Any]:
    """The pipeline parameters for `cfg`; `values` (e.g. epochs=3) replace single ones."""
    unknown = sorted(set(values) - {knob.name for knob in RUN_KNOBS})
    if unknown:
        raise ValueError(f"unknown run parameter(s): {', '.join(unknown)}")
    return {
        knob.name: knob.default_in(cfg) if values.get(knob.name) is None else values[knob.name]
        for knob in RUN_KNOBS
    }


def add_arguments(parser: argparse.ArgumentParser, *, from_env: bool = False) -> None:
    """Every knob as a flag; unset = the configuration's. `from_env`: `make local-run`'s
    variables (DATA, BACKBONES, ...) are the defaults, and `--data` is `--source`'s alias."""
    group = parser.add_argument_group("run knobs (default: from the configuration)")
    for knob in KNOBS:
        flags = [knob.flag, *(["--data"] if from_env and knob.name == "source" else [])]
        text = os.environ.get(knob.env) if from_env and knob.env else None
        group.add_argument(
            *flags,
            dest=knob.name,
            type=knob.parse,
            choices=knob.choices or None,
            default=text or None,  # argparse applies `type` to a string default
            metavar=None if knob.choices else _METAVARS.get(knob.type, knob.name.upper()),
            help=knob.help + (f" (${knob.env})" if from_env and knob.env else ""),
        )


def values_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run knobs given on the command line (None = not given)."""
    return {knob.name: getattr(args, knob.name, None) for knob in RUN_KNOBS}


def with_compiled_knobs(cfg: Config, args: argparse.Namespace) -> Config:
    """`cfg` with the compiled knobs given as flags set (`--parallelism 1`)."""
    given = {
        knob.path: getattr(args, knob.name)
        for knob in KNOBS
        if knob.compiled and getattr(args, knob.name, None) is not None
    }
    return cfg.merged(undot(given)) if given else cfg


def train_settings(section: dict[str, Any], values: dict[str, Any]) -> TrainConfig:
    """The train section a run trains with: the compiled `section` plus the knob `values`.

    A knob whose value differs from the section's applies to every backbone, unless an
    entry of the `backbone_overrides` knob that differs from the section's sets it for
    its backbone (the precedence `--set train.X` has). The values travel as dotted
    `--set` overrides, merged by the config model above the section.
    """
    user_overrides = _normalized(values.get(_OVERRIDES, section.get("overrides", {})))
    compiled_overrides = _normalized(section.get("overrides", {}))
    changed = {
        knob.path: values[knob.name]
        for knob in TRAIN_KNOBS
        if knob.type is not dict
        and knob.name in values
        and values[knob.name] != section.get(_key(knob))
    }
    explicit = {
        f"train.overrides.{name}.{key}": value
        for name, settings in user_overrides.items()
        for key, value in settings.items()
        if compiled_overrides.get(name, {}).get(key, _MISSING) != value
    }
    keys = {path.split(".", 1)[1] for path in changed}
    kept = {key.split(".", 2)[2] for key in explicit}  # "name.key"
    base = {  # a changed knob is not shadowed by a per-backbone value the user did not set
        name: {k: v for k, v in settings.items() if k not in keys or f"{name}.{k}" in kept}
        for name, settings in user_overrides.items()
    }
    # The section is the base as a whole (a file layer would merge the code's default
    # overrides back in); the knobs are `--set` overrides on top of it.
    base_cfg = Config.from_dict({"train": {**section, "overrides": base}})
    return base_cfg.merged(undot({**changed, **explicit})).train


def _key(knob: Knob) -> str:
    """The setting's name in its section (`train.learning_rate` -> learning_rate)."""
    return (knob.path or knob.name).split(".", 1)[-1]


def _normalized(overrides: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(overrides, dict):
        raise ConfigError(f"train.overrides: expected a JSON object, got {overrides!r}")
    return TrainConfig(overrides=overrides).overrides


def markdown_table(cfg: Config | None = None) -> str:
    """The knob table of docs/pipeline.md (generated; a test keeps the doc current)."""
    cfg = cfg or Config()
    rows = ["| knob | flag | type | what | default |", "|---|---|---|---|---|"]
    for knob in KNOBS:
        what = knob.help + (f": {', '.join(knob.choices)}" if knob.choices else "")
        kind = _TYPE_WORDS[knob.type] + (" (compiled)" if knob.compiled else "")
        if knob.type is dict:  # a table: params.yaml shows it better than one cell
            default = f"`{knob.path}` of params.yaml"
        else:
            value = "`" + json.dumps(knob.default_in(cfg)).replace("|", "\\|") + "`"
            default = f"{value} (`{knob.path}`)" if knob.path else value
        rows.append(f"| `{knob.name}` | `{knob.flag}` | {kind} | {what} | {default} |")
    return "\n".join(rows)
