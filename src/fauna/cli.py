"""`fauna`: every pipeline step as a subcommand.

The command table below names, for each command, the function that imports its
module; each module provides `add_arguments(parser)` and `run(args, cfg) -> int`
(pipelines/cluster.py holds three commands and names its functions per command). A
module is imported only for the command being run, so `fauna --help` and
`fauna <command> --help` answer without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fauna import logs
from fauna.config import Config, load_config, parse_override
from fauna.errors import FaunaError

AddArguments = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace, Config], int]


@dataclass(frozen=True)
class Command:
    help: str
    load: Callable[[], tuple[AddArguments, Run]]
    # The profile a command uses when none is given (local runs are sized for a laptop).
    default_profile: str | None = None


def _ingest():
    from fauna.steps import ingest

    return ingest.add_arguments, ingest.run


def _preprocess():
    from fauna.steps import preprocess

    return preprocess.add_arguments, preprocess.run


def _split():
    from fauna.steps import split

    return split.add_arguments, split.run


def _augment():
    from fauna.steps import augment

    return augment.add_arguments, augment.run


def _train():
    from fauna.steps import train

    return train.add_arguments, train.run


def _evaluate():
    from fauna.steps import evaluate

    return evaluate.add_arguments, evaluate.run


def _tsne():
    from fauna.steps import tsne

    return tsne.add_arguments, tsne.run


def _compare():
    from fauna.steps import compare

    return compare.add_arguments, compare.run


def _predict():
    from fauna.steps import predict

    return predict.add_arguments, predict.run


def _serve():
    from fauna.serving import server

    return server.add_arguments, server.run


def _publish():
    from fauna.steps import publish

    return publish.add_arguments, publish.run


def _register():
    from fauna.store import registry

    return registry.add_arguments, registry.run


def _compile():
    from fauna.pipelines import cluster

    return cluster.add_compile_arguments, cluster.run_compile


def _submit():
    from fauna.pipelines import cluster

    return cluster.add_submit_arguments, cluster.run_submit


def _schedule():
    from fauna.pipelines import cluster

    return cluster.add_schedule_arguments, cluster.run_schedule


def _local_run():
    from fauna.pipelines import local

    return local.add_arguments, local.run


def _synth():
    from fauna.data import synthetic

    return synthetic.add_arguments, synthetic.run


def _check_store():
    from fauna.store import conditional_writes as store_check

    return store_check.add_arguments, store_check.run


def _sweep():
    from fauna import sweep

    return sweep.add_arguments, sweep.run


def _config():
    from fauna import config

    return config.add_arguments, config.run


# The order is the pipeline's order.
COMMANDS: dict[str, Command] = {
    "ingest": Command("fetch a dataset (Kaggle, folder, archive, S3, URL) and check it", _ingest),
    "preprocess": Command("resize + centre-crop into TFRecord shards", _preprocess),
    "split": Command("stratified train/val/test split", _split),
    "augment": Command("balance (oversample) and/or set train-time augmentation", _augment),
    "train": Command("train one backbone (resumable)", _train),
    "evaluate": Command("test-split metrics, confusion matrix, confused pairs", _evaluate),
    "tsne": Command("t-SNE plot of the penultimate-layer embeddings", _tsne),
    "compare": Command("comparison report across backbones (Markdown + HTML)", _compare),
    "predict": Command("top-3 species for images with a trained model", _predict),
    "publish": Command("upload a run to S3 and promote the champion if better", _publish),
    "serve": Command("serve the champion (or a model) over KServe's V1/V2 protocols", _serve),
    "register": Command("register a published run in the Kubeflow Model Registry", _register),
    "compile": Command("compile the KFP pipeline to YAML", _compile),
    "submit": Command("submit the pipeline to a Kubeflow cluster", _submit),
    "schedule": Command("schedule recurring retraining on a Kubeflow cluster", _schedule),
    "local-run": Command("run the whole pipeline on this machine", _local_run, "smoke"),
    "sweep": Command("render a Katib Experiment that tunes one backbone's training", _sweep),
    "synth": Command("generate a synthetic sample dataset (not real animals)", _synth),
    "check-store": Command("check that a store enforces conditional writes", _check_store),
    "config": Command("print the effective configuration as YAML", _config),
}

EPILOG = """\
configuration: every command reads the defaults (the paper's settings, see params.yaml),
then --config FILE, then --profile NAME, then each --set section.key=value.

examples:
  fauna ingest --source ./photos --out work/raw
  fauna preprocess --raw work/raw --out work/pre --set preprocess.image_size=224
  fauna train --data work/augmented --backbone resnet50 --out work/models/resnet50 \
              --set train.weights=none   # offline: from random weights
  fauna local-run                     # the whole study on this machine
"""


def _common(parser: argparse.ArgumentParser, default_profile: str | None) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="FILE", help="YAML file in the params.yaml shape")
    group.add_argument(
        "--profile",
        metavar="NAME",
        default=default_profile,
        help="named overlay, e.g. smoke or paper"
        + (f" (default: {default_profile}, or $PROFILE)" if default_profile else ""),
    )
    group.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one setting, e.g. --set train.batch_size=16 (repeatable)",
    )
    output = parser.add_argument_group("output")
    output.add_argument("-v", "--verbose", action="count", default=0, help="more log lines")
    output.add_argument("-q", "--quiet", action="count", default=0, help="warnings only")


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    """The parser; only the selected command's module is imported for its arguments."""
    parser = argparse.ArgumentParser(
        prog="fauna",
        description="Train, compare and ship CNN classifiers for 30 animal species.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        description = command.help[:1].upper() + command.help[1:] + "."
        p = sub.add_parser(name, help=command.help, description=description)
        if name == selected:
            add_arguments, _ = command.load()
            add_arguments(p)
            profile = command.default_profile and os.environ.get("PROFILE", command.default_profile)
            _common(p, profile or None)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.profile, dict(parse_override(o) for o in args.overrides))
    _, run = COMMANDS[args.command].load()
    return int(run(args, cfg) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected if selected in COMMANDS else None)
    args: Any = parser.parse_args(argv)
    logs.configure(args.verbose - args.quiet)
    try:
        return _run(args)
    except FaunaError as exc:  # exit 2, or 75 for a transient failure (see fauna.errors)
        print(f"fauna {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"fauna {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
