"""Katib: `fauna sweep` renders an Experiment Katib accepts, and train's output feeds it.

- The rendered Experiment validates against Katib's Experiment API schema (vendored in
  tests/katib_experiment_schema.yaml, source named there), made strict (an unknown
  field would be dropped silently by the controller's decoder), read as Kubernetes reads
  YAML (go-yaml: an unquoted `1e-4` is a number), and passes the rules of Katib's
  admission webhook (kubeflow/katib pkg/webhook/v1beta1/experiment/validator/validator.go).
- Real `fauna train` output, read with the StdOut collector's default filter
  (kubeflow/katib pkg/metricscollector/v1beta1/common/const.go, `DefaultFilter`) the way
  its text parser applies it (pkg/metricscollector/v1beta1/file-metricscollector/
  file-metricscollector.go, `parseLogsInTextFormat`), gives every epoch's metrics.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

SCHEMA_FILE = Path(__file__).with_name("katib_experiment_schema.yaml")
# Katib's DefaultFilter, verbatim (Go RE2; the same in Python's re for this pattern).
KATIB_DEFAULT_FILTER = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
# The webhook's rules (validator.go and the v1beta1 API constants).
PARAMETER_TYPES = {"int", "double", "categorical", "discrete"}
DISTRIBUTIONS = {"uniform", "logUniform", "normal", "logNormal"}
TRIAL_PARAMETER = re.compile(r"\$\{trialParameters\.([^}]+)\}")


class KubernetesYamlLoader(yaml.SafeLoader):
    """YAML as go-yaml reads it for kubectl: `1e-4` and `1E5` are numbers (YAML 1.2)."""


KubernetesYamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$"),
    list("-+0123456789."),
)


def strict_schema() -> dict:
    """The vendored definitions, every Katib object closed to unknown fields; the core
    Kubernetes types they reference (not in Katib's file) left open."""
    definitions = copy.deepcopy(yaml.safe_load(SCHEMA_FILE.read_text())["definitions"])
    for definition in definitions.values():
        if "properties" in definition:
            definition["additionalProperties"] = False
    for core in ("v1.ObjectMeta", "v1.Container", "v1.Time", "v1.HTTPGetAction"):
        definitions[core] = {"type": "object"}
    definitions["v1.unstructured.Unstructured"] = {"type": "object"}
    return {"$ref": "#/definitions/v1beta1.Experiment", "definitions": definitions}


def webhook_problems(experiment: dict) -> list[str]:
    """What Katib's admission webhook would refuse (the rules fauna's output touches)."""
    spec, problems = experiment["spec"], []
    name = experiment["metadata"]["name"]
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        problems.append(f"metadata.name {name!r}")
    if spec["objective"]["type"] not in ("maximize", "minimize"):
        problems.append("objective.type")
    metrics = [
        spec["objective"]["objectiveMetricName"],
        *spec["objective"]["additionalMetricNames"],
    ]
    if len(set(metrics)) != len(metrics):
        problems.append("objective metric names repeated")
    names = {p["name"] for p in spec["parameters"]}
    for p in spec["parameters"]:
        space = p["feasibleSpace"]
        if p["parameterType"] not in PARAMETER_TYPES:
            problems.append(f"{p['name']}: parameterType")
        if space.get("distribution", "uniform") not in DISTRIBUTIONS:
            problems.append(f"{p['name']}: distribution")
        numeric = p["parameterType"] in ("int", "double")
        if numeric and (space.get("list") or not space.get("min") or not space.get("max")):
            problems.append(f"{p['name']}: a numeric range needs min and max, no list")
        if not numeric and any(k in space for k in ("min", "max", "step")):
            problems.append(f"{p['name']}: a list takes no min/max/step")
    template = spec["trialTemplate"]
    text = json.dumps(template["trialSpec"])
    declared = [t["name"] for t in template["trialParameters"]]
    if len(set(declared)) != len(declared) or set(TRIAL_PARAMETER.findall(text)) != set(declared):
        problems.append("trialParameters and the ${trialParameters.X} in trialSpec differ")
    if any(t["reference"] not in names for t in template["trialParameters"]):
        problems.append("a trialParameter references no parameter")
    trial = template["trialSpec"]
    if not trial.get("apiVersion") or not trial.get("kind") or "metadata" in trial:
        problems.append("trialSpec needs apiVersion and kind, and no metadata")
    containers = trial["spec"]["template"]["spec"]["containers"]
    if template["primaryContainerName"] not in [c["name"] for c in containers]:
        problems.append("primaryContainerName names no container")
    collector = spec["metricsCollectorSpec"]["collector"]["kind"]
    if collector != "StdOut" or "source" in spec["metricsCollectorSpec"]:
        problems.append("not the default StdOut collector")
    return problems


def render(tmp_path: Path, *args: str) -> tuple[dict, str]:
    from fauna.cli import main

    out = tmp_path / "experiment.yaml"
    code = main(["sweep", "--backbone", "ResNet50", "--data", "s3://fauna/runs/r1/augment",
                 "--out", str(out), *args])  # fmt: skip
    assert code == 0
    text = out.read_text()
    return yaml.load(text, Loader=KubernetesYamlLoader), text


def test_experiment_validates_against_katib_schema_and_webhook_rules(tmp_path: Path) -> None:
    experiment, text = render(
        tmp_path,
        "--param", "train.learning_rate=1e-5:1e-2:log",
        "--param", "train.batch_size=16,32,64",
        "--param", "train.dropout=0.1:0.5",
        "--param", "train.fine_tune_layers=10:60",
        "--epochs", "20", "--set", "train.weights=none", "--max-trials", "8",
    )  # fmt: skip
    jsonschema.validate(experiment, strict_schema())
    assert webhook_problems(experiment) == []
    spec = experiment["spec"]
    assert spec["objective"]["objectiveMetricName"] == "val_macro_f1"  # compare's metric
    assert spec["objective"]["type"] == "maximize"
    assert {s["value"] for s in spec["objective"]["metricStrategies"]} == {"latest"}
    assert spec["earlyStopping"]["algorithmName"] == "medianstop"
    [container] = spec["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[:6] == ["fauna", "train", "--data", "s3://fauna/runs/r1/augment",
                           "--backbone", "resnet50"]  # fmt: skip
    assert "--set=train.weights=none" in command and "20" in command
    assert "train.learning_rate=${trialParameters.learning_rate}" in command
    spaces = {p["name"]: (p["parameterType"], p["feasibleSpace"]) for p in spec["parameters"]}
    assert spaces["learning_rate"] == (
        "double",
        {"min": "1e-5", "max": "1e-2", "distribution": "logUniform"},
    )
    assert spaces["batch_size"] == ("discrete", {"list": ["16", "32", "64"]})
    assert spaces["fine_tune_layers"] == ("int", {"min": "10", "max": "60"})
    assert 'min: "1e-5"' in text  # quoted: go-yaml would read 1e-5 as a number


def test_the_checks_catch_what_katib_would_refuse(tmp_path: Path) -> None:
    """The schema and webhook checks above can fail: each broken copy is refused."""
    experiment, _ = render(tmp_path)
    schema = strict_schema()
    broken = copy.deepcopy(experiment)
    broken["spec"]["parameters"][0]["feasibleSpace"]["min"] = 1e-5  # a number, not text
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = copy.deepcopy(experiment)
    broken["spec"]["maxTrials"] = 3  # a misspelt field the controller would drop
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = copy.deepcopy(experiment)
    broken["spec"]["trialTemplate"]["trialParameters"][0]["name"] = "lr"
    assert webhook_problems(broken)
    # the default sweep: the scratch or pretrained learning rate of the backbone's recipe
    names = [p["name"] for p in experiment["spec"]["parameters"]]
    assert names == ["learning_rate"]  # params.yaml: weights imagenet
    scratch, _ = render(tmp_path, "--set", "train.weights=none")
    assert [p["name"] for p in scratch["spec"]["parameters"]] == ["scratch_learning_rate"]
    loss, _ = render(tmp_path, "--set", "compare.champion_metric=neg_loss")
    objective = loss["spec"]["objective"]
    assert (objective["objectiveMetricName"], objective["type"]) == ("val_loss", "minimize")


def _epoch_metrics() -> tuple[str, ...]:
    """The metrics train logs each epoch (fauna.training.callbacks.EPOCH_METRICS), read
    from the source so this test does not import Keras."""
    import ast

    import fauna.training

    source = Path(fauna.training.__file__).with_name("callbacks.py").read_text()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EPOCH_METRICS":
            return ast.literal_eval(node.value)
    raise AssertionError("EPOCH_METRICS not found in fauna/training/callbacks.py")


@pytest.mark.parametrize("metric", ["top1", "top3", "macro_f1", "weighted_f1", "roc_auc", "loss"])
def test_the_objective_is_the_metric_specs_validation_counterpart(
    metric: str, tmp_path: Path, capsys
) -> None:
    """The metric spec names each champion metric's validation metric and direction; the
    sweep takes both from it, and they are metrics train really logs."""
    from fauna.cli import main
    from fauna.score.metrics import metric_spec

    spec = metric_spec(metric)
    logged = {f"val_{m}" for m in _epoch_metrics()}
    if spec.validation is None:  # weighted-F1: training measures none
        args = ["sweep", "--backbone", "resnet50", "--data", "s3://b/p"]
        assert main([*args, "--set", f"compare.champion_metric={metric}"]) == 2
        err = capsys.readouterr().err.strip()
        assert "has no validation counterpart" in err and "\n" not in err, err
        return
    experiment, _ = render(tmp_path, "--set", f"compare.champion_metric={metric}")
    objective = experiment["spec"]["objective"]
    assert objective["objectiveMetricName"] == spec.validation in logged
    assert objective["type"] == ("maximize" if spec.higher_is_better else "minimize")
    assert set(objective["additionalMetricNames"]) <= logged - {spec.validation}


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ("train.batchsize=16,32", "with X one of batch_size"),
        ("train.learning_rate=0.1", "a range MIN:MAX[:log] needs a numeric setting"),
        ("train.learning_rate=1e-2:1e-5", "MIN must be below MAX"),
        ("train.dropout=0.1:1.5", "train.dropout: Input should be less than 1"),
        ("train.batch_size=0,16", "train.batch_size: Input should be greater than or equal to 1"),
    ],
)
def test_a_bad_sweep_is_one_line(param: str, message: str, tmp_path: Path, capsys) -> None:
    from fauna.cli import main

    code = main(["sweep", "--backbone", "resnet50", "--data", "s3://b/p", "--param", param])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err, err


def katib_metrics(log: str, names: list[str]) -> list[tuple[str, float]]:
    """What the StdOut collector records from a log: Katib's text parser, line by line."""
    pattern, found = re.compile(KATIB_DEFAULT_FILTER), []
    for line in log.splitlines():
        if not any(name in line for name in names):  # it skips lines naming no metric
            continue
        for match in pattern.finditer(line):
            name, value = match.group(1).strip(), match.group(2).strip()
            if name in names:
                found.append((name, float(value)))
    return found


@pytest.mark.training
def test_katib_default_collector_reads_every_epoch_of_real_train_output(
    tmp_path: Path, capsys
) -> None:
    """stdout and stderr together, as Katib's wrapper redirects them (`1>file 2>&1`)."""
    from test_train import make_split_dataset

    from fauna.cli import main

    data = make_split_dataset(tmp_path / "data", size=32)
    out = tmp_path / "model"
    args = ["train", "--data", str(data), "--backbone", "mobilenetv3small", "--out", str(out)]
    assert main([*args, "--epochs", "3", "--set", "train.weights=none"]) == 0
    captured = capsys.readouterr()
    log = captured.err + captured.out
    history = json.loads((out / "history.json").read_text())
    names = ["val_macro_f1", "val_accuracy", "val_loss", "loss", "accuracy"]
    found = katib_metrics(log, names)
    for name in names:
        values = [v for n, v in found if n == name]
        expected = [h[name] for h in history]
        if name.startswith("val_"):  # train's last line: the weights it kept
            expected.append(history[-1][name])
        assert values == pytest.approx(expected, rel=1e-3, abs=1e-4), (name, log)
    epoch_lines = [line for line in log.splitlines() if re.search(r"epoch \d/3: ", line)]
    assert len(epoch_lines) == 3, log
    # epoch n/N, the metrics, then the epoch's time, the run's so far and the time left
    timing = re.compile(r"\(\d+\.\d s; \d+ (min \d+ )?s elapsed, ETA \d+ (min \d+ )?s\)$")
    assert all(timing.search(line) for line in epoch_lines), epoch_lines
    assert epoch_lines[-1].endswith("ETA 0 s)")
    assert captured.out == ""  # the summary is logged once, as the step's last line
