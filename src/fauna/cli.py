"""`fauna`: every pipeline step as a subcommand.

Each subcommand lives in its step's module, which provides
`add_arguments(parser)` and `run(args, cfg) -> int`. Modules are imported only
for the command being run, so `fauna --help` answers without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from fauna.config import load_config, parse_override
from fauna.errors import FaunaError

# name -> (module, one-line help). The order is the pipeline's order.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": (
        "fauna.steps.ingest",
        "fetch a dataset (Kaggle, folder, archive, S3, URL) and check it",
    ),
    "preprocess": ("fauna.steps.preprocess", "resize + centre-crop into TFRecord shards"),
    "split": ("fauna.steps.split", "stratified train/val/test split"),
    "augment": ("fauna.steps.augment", "balance (oversample) and/or set train-time augmentation"),
    "train": ("fauna.steps.train", "fine-tune one backbone (resumable)"),
    "evaluate": ("fauna.steps.evaluate", "test-split metrics, confusion matrix, confused pairs"),
    "tsne": ("fauna.steps.tsne", "t-SNE plot of the penultimate-layer embeddings"),
    "compare": ("fauna.steps.compare", "comparison report across backbones (Markdown + HTML)"),
    "predict": ("fauna.steps.predict", "top-3 species for images with a trained model"),
    "publish": ("fauna.steps.publish", "upload a run to S3 and promote the champion if better"),
    "compile": ("fauna.pipelines.cli", "compile the KFP pipeline to YAML"),
    "submit": ("fauna.pipelines.cli", "submit the pipeline to a Kubeflow cluster"),
    "schedule": ("fauna.pipelines.cli", "schedule recurring retraining on a Kubeflow cluster"),
    "local-run": ("fauna.pipelines.local", "run the whole pipeline on this machine"),
    "synth": ("fauna.synthetic", "generate a synthetic sample dataset (not real animals)"),
    "config": ("fauna.config", "print the effective configuration as YAML"),
}

EPILOG = """\
configuration: every command reads the defaults (the paper's settings, see params.yaml),
then --config FILE, then --profile NAME, then each --set section.key=value.

examples:
  fauna ingest --source ./photos --out work/raw
  fauna preprocess --raw work/raw --out work/pre --set preprocess.image_size=224
  fauna train --data work/balanced --backbone resnet50 --out work/models/resnet50
  fauna local-run                     # the whole study on this machine
"""


def _common(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration")
    group.add_argument("--config", metavar="FILE", help="YAML file in the params.yaml shape")
    group.add_argument("--profile", metavar="NAME", help="named overlay, e.g. smoke or paper")
    group.add_argument(
        "--set",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        dest="overrides",
        help="override one setting, e.g. --set train.batch_size=16 (repeatable)",
    )


def build_parser(selected: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fauna",
        description="Train, compare and ship CNN classifiers for 30 animal species.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:])
        if name == selected:
            mod = importlib.import_module(module)
            adder = getattr(mod, f"add_{name.replace('-', '_')}_arguments", None)
            (adder or mod.add_arguments)(p)
            _common(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    if selected not in COMMANDS:
        selected = None
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    try:
        cfg = load_config(
            args.config, args.profile, dict(parse_override(o) for o in args.overrides)
        )
        mod = importlib.import_module(COMMANDS[args.command][0])
        runner = getattr(mod, f"run_{args.command.replace('-', '_')}", None) or mod.run
        return int(runner(args, cfg) or 0)
    except FaunaError as exc:
        print(f"fauna {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"fauna {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
