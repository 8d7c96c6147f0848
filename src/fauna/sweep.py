"""`fauna sweep`: a Katib `Experiment` that tunes training settings of one backbone.

Each trial is a Kubernetes Job running `fauna train` in the fauna image, with the swept
settings as `--set train.X=${trialParameters.X}` arguments (the precedence rule makes a
general `train.X` apply to the backbone even where params.yaml has a per-backbone value).
Train prints one `name=value` line per epoch and, last, the validation metrics of the
weights it kept, which Katib's default StdOut metrics collector parses
(kubeflow/katib pkg/metricscollector/v1beta1/common/const.go, `DefaultFilter`); the
objective is the validation counterpart of `compare.champion_metric`, read with the
`latest` strategy (the model train saved, not the best epoch seen). Median-stop early
stopping works on the per-epoch lines.

Rendered as plain YAML (no Katib SDK: it pins protobuf<5); tests/test_sweep.py checks it
against Katib's Experiment API schema and its admission webhook's rules.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from fauna.config import BackboneTrainConfig, Config, ConfigError
from fauna.score.metrics import SPECS, VALIDATION_METRICS, metric_spec

CONTAINER = "training-container"
ALGORITHMS = ("random", "tpe", "bayesianoptimization", "grid", "cmaes")


class SweepError(ConfigError):
    """A sweep that cannot be rendered (one line)."""


@dataclass(frozen=True)
class Param:
    """One swept setting: `train.<name>` and its Katib feasible space."""

    name: str
    type: str  # double | int | categorical | discrete
    space: dict[str, Any]

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "parameterType": self.type, "feasibleSpace": self.space}


def parse_param(text: str) -> Param:
    """`train.X=MIN:MAX` (`:log` for log-uniform) or `train.X=A,B,C`."""
    key, sep, space = text.partition("=")
    section, _, name = key.strip().partition(".")
    hints = get_type_hints(BackboneTrainConfig)
    if not sep or section != "train" or name not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(BackboneTrainConfig))
        raise SweepError(
            f"--param {text!r}: expected train.X=MIN:MAX[:log] or train.X=A,B,... "
            f"with X one of {known}"
        )
    hint = hints[name]
    if "," in space or hint is str:
        values = [v.strip() for v in space.split(",") if v.strip()]
        kind = "discrete" if hint in (int, float) else "categorical"
        _check_values(name, values)
        return Param(name, kind, {"list": values})
    parts = space.split(":")
    if hint not in (int, float) or len(parts) not in (2, 3) or parts[2:] not in ([], ["log"]):
        raise SweepError(f"--param {text!r}: a range MIN:MAX[:log] needs a numeric setting")
    low, high = parts[0].strip(), parts[1].strip()
    _check_values(name, [low, high])
    if float(low) >= float(high):
        raise SweepError(f"--param {text!r}: MIN must be below MAX")
    space_spec = {"min": low, "max": high}
    if parts[2:] == ["log"]:
        space_spec["distribution"] = "logUniform"
    return Param(name, "int" if hint is int else "double", space_spec)


def _check_values(name: str, values: list[str]) -> None:
    """Every end of the space must be a valid setting (the config's own one-line check)."""
    if not values:
        raise SweepError(f"--param train.{name}: no values")
    for value in values:
        try:
            Config.from_dict({"train": {name: yaml.safe_load(value)}})
        except ConfigError as exc:
            raise SweepError(f"--param train.{name}={value}: {exc}") from None


def default_params(cfg: Config, backbone: str) -> list[Param]:
    """The learning rate of the backbone's recipe, 1e-5..1e-2 log-uniform."""
    from fauna.model.backbones import is_pretrained

    weights = cfg.train.for_backbone(backbone).weights
    name = "learning_rate" if is_pretrained(weights) else "scratch_learning_rate"
    return [Param(name, "double", {"min": "1e-05", "max": "0.01", "distribution": "logUniform"})]


@dataclass
class Sweep:
    backbone: str
    data: str  # s3:// prefix (or a path in the image) of a split or augment output
    params: list[Param]
    name: str = ""
    namespace: str = "kubeflow"
    image: str = ""
    epochs: int | None = None
    max_trials: int = 12
    parallel: int = 3
    algorithm: str = "random"
    early_stopping: bool = True
    train_args: list[str] = dataclasses.field(default_factory=list)  # --profile/--set


def experiment(sweep: Sweep, cfg: Config) -> dict[str, Any]:
    """The Katib v1beta1 Experiment as a plain dict."""
    if sweep.algorithm not in ALGORITHMS:
        raise SweepError(f"--algorithm must be {'|'.join(ALGORITHMS)}, got {sweep.algorithm!r}")
    if not 1 <= sweep.parallel <= sweep.max_trials:
        raise SweepError("--parallel must be between 1 and --max-trials")
    target = metric_spec(cfg.compare.champion_metric)
    metric = target.validation
    if metric is None:
        swept = ", ".join(s.key for s in SPECS if s.may_crown and s.validation)
        raise SweepError(
            f"compare.champion_metric={cfg.compare.champion_metric} has no validation "
            f"counterpart during training: sweep one of {swept}"
        )
    others = [m for m in VALIDATION_METRICS if m != metric]
    spec: dict[str, Any] = {
        "objective": {
            "type": "maximize" if target.higher_is_better else "minimize",
            "objectiveMetricName": metric,
            "additionalMetricNames": others,
            "metricStrategies": [{"name": m, "value": "latest"} for m in (metric, *others)],
        },
        "algorithm": {"algorithmName": sweep.algorithm},
        "parallelTrialCount": sweep.parallel,
        "maxTrialCount": sweep.max_trials,
        "maxFailedTrialCount": max(1, sweep.max_trials // 4),
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "parameters": [p.spec() for p in sweep.params],
        "trialTemplate": {
            "primaryContainerName": CONTAINER,
            "trialParameters": [
                {"name": p.name, "description": f"train.{p.name}", "reference": p.name}
                for p in sweep.params
            ],
            "trialSpec": _trial_job(sweep, cfg),
        },
    }
    if sweep.early_stopping:
        settings = {"min_trials_required": str(min(3, sweep.max_trials)), "start_step": "2"}
        spec["earlyStopping"] = {
            "algorithmName": "medianstop",
            "algorithmSettings": [{"name": k, "value": v} for k, v in settings.items()],
        }
    name = sweep.name or f"fauna-{sweep.backbone}-sweep"
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": _dns_name(name), "namespace": sweep.namespace},
        "spec": spec,
    }


def _trial_job(sweep: Sweep, cfg: Config) -> dict[str, Any]:
    """A batch/v1 Job running `fauna train` once with the trial's settings."""
    pipeline = cfg.pipeline
    command = ["fauna", "train", "--data", sweep.data, "--backbone", sweep.backbone]
    command += ["--out", "/tmp/fauna/model", *sweep.train_args]
    if sweep.epochs is not None:
        command += ["--epochs", str(sweep.epochs)]
    for p in sweep.params:
        command += ["--set", f"train.{p.name}=${{trialParameters.{p.name}}}"]
    resources: dict[str, Any] = {
        "requests": {"cpu": pipeline.train_cpu, "memory": pipeline.train_memory},
        "limits": {"memory": pipeline.train_memory},
    }
    pod: dict[str, Any] = {"restartPolicy": "Never"}
    if pipeline.use_gpu:
        resources["limits"]["nvidia.com/gpu"] = pipeline.gpu_count
        pod["nodeSelector"] = dict(pipeline.gpu_node_selector)
        pod["tolerations"] = [
            {"key": pipeline.gpu_toleration_key, "operator": "Exists", "effect": "NoSchedule"}
        ]
    image = sweep.image or (pipeline.image_gpu if pipeline.use_gpu else pipeline.image_cpu)
    container = {
        "name": CONTAINER,
        "image": image,
        "command": command,
        "env": [{"name": "FAUNA_CACHE_DIR", "value": "/tmp/fauna/cache"}],  # the data copy
        "envFrom": [{"secretRef": {"name": pipeline.s3_secret, "optional": True}}],
        "resources": resources,
    }
    pod["containers"] = [container]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                "spec": pod,
            },
        },
    }


class _QuotingDumper(yaml.SafeDumper):
    """Quotes every string that reads as a number in YAML 1.2: Kubernetes (go-yaml) reads
    an unquoted `1e-4` as a number, and Katib's `feasibleSpace.min` must be a string."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    try:
        float(text)
    except ValueError:
        return dumper.represent_str(text)
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')


_QuotingDumper.add_representer(str, _represent_str)


def render(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_QuotingDumper, sort_keys=False)


def _dns_name(text: str) -> str:
    """A Kubernetes object name: lowercase alphanumerics and '-', at most 63 characters."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")[:63].rstrip("-")
    if not name:
        raise SweepError(f"--name {text!r} has no usable characters")
    return name


# ---------------------------------------------------------------------------- CLI


def add_arguments(parser: Any) -> None:
    parser.add_argument("--backbone", required=True, help="the backbone to tune, e.g. resnet50")
    parser.add_argument(
        "--data", required=True, help="s3:// prefix of a split or augment output (the trials' data)"
    )
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="train.X=RANGE",
        help="a swept setting: train.X=MIN:MAX[:log] or train.X=A,B,C (repeatable; default: "
        "the recipe's learning rate, 1e-5..1e-2 log-uniform)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial")
    parser.add_argument("--max-trials", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=3, help="trials at once")
    parser.add_argument("--algorithm", default="random", help="|".join(ALGORITHMS))
    parser.add_argument("--no-early-stopping", action="store_true", help="no median stop")
    parser.add_argument("--name", default="", help="Experiment name")
    parser.add_argument("--namespace", default="kubeflow", help="Kubeflow profile namespace")
    parser.add_argument("--image", default="", help="default: pipeline.image_gpu/image_cpu")
    parser.add_argument("--out", type=Path, default=None, help="YAML file (default: stdout)")


def run(args: Any, cfg: Config) -> int:
    from fauna.model.backbones import get_backbone

    if args.config:
        raise SweepError("--config FILE does not reach the trials' pods: pass --set settings")
    train_args = [f"--profile={args.profile}"] if args.profile else []
    train_args += [f"--set={o}" for o in args.overrides]
    backbone = get_backbone(args.backbone).name
    params = [parse_param(p) for p in args.param] or default_params(cfg, backbone)
    sweep = Sweep(
        backbone=backbone,
        data=args.data,
        params=params,
        name=args.name,
        namespace=args.namespace,
        image=args.image,
        epochs=args.epochs,
        max_trials=args.max_trials,
        parallel=args.parallel,
        algorithm=args.algorithm,
        early_stopping=not args.no_early_stopping,
        train_args=train_args,
    )
    text = render(experiment(sweep, cfg))
    if args.out:
        args.out.write_text(text)
        print(f"Katib Experiment written to {args.out}: kubectl apply -f {args.out}")
    else:
        sys.stdout.write(text)
    return 0
