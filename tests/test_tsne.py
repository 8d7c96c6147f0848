"""t-SNE from evaluate's features: the same as from the model, with no TensorFlow; task timings.

The dataset and the tiny model are the shared fixtures of conftest.py (test_evaluate's,
in the train step's contracts).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_evaluate import CLASSES, PER_SPLIT

from fauna import timing
from fauna.config import EvaluateConfig, TsneConfig
from fauna.score.evaluation import FEATURES, EvaluationError
from fauna.step_output import step_output

N_TEST = PER_SPLIT["test"] * len(CLASSES)


def _loaded(tag: str) -> str:
    """A line of code that prints which of TensorFlow and Keras the process has imported."""
    return f"print({tag!r}, *[m for m in ('tensorflow', 'keras') if m in sys.modules])\n"


def _reported(stdout: str, tag: str) -> list[str]:
    line = next(x for x in stdout.splitlines() if x.startswith(tag))
    return line.removeprefix(tag).split()


@pytest.fixture(scope="module")
def eval_dir(tmp_path_factory: pytest.TempPathFactory, dataset: Path, model_dir: Path) -> Path:
    from fauna.steps.evaluate import evaluate_model

    out = tmp_path_factory.mktemp("eval") / "tiny"
    evaluate_model(model_dir, dataset, out, EvaluateConfig())
    return out


@pytest.fixture(autouse=True)
def _no_timer_left():
    yield
    timing.end()


def _saved(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "embeddings.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.training
def test_evaluate_writes_every_test_image_features(eval_dir: Path) -> None:
    import csv

    with np.load(eval_dir / FEATURES) as npz:
        assert npz["features"].shape == (N_TEST, 16)  # the "embedding" layer's width
        assert npz["features"].dtype == np.float32
        assert list(npz["classes"]) == CLASSES and str(npz["backbone"]) == "tiny"
        ids, labels = list(npz["ids"]), npz["labels"]
    with (eval_dir / "predictions.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert ids == [r["id"] for r in rows]  # the rows of predictions.csv, in order
    assert [CLASSES[i] for i in labels] == [r["true"] for r in rows]


@pytest.mark.training
@pytest.mark.parametrize("cap", [12, 1000])  # a stratified sample, and every test image
def test_tsne_from_evaluate_features_equals_tsne_from_the_model(
    dataset: Path, model_dir: Path, eval_dir: Path, tmp_path: Path, cap: int
) -> None:
    from fauna.steps.tsne import tsne_embeddings

    cfg = TsneConfig(perplexity=5, max_samples=cap)
    from_model = tsne_embeddings(model_dir, dataset, tmp_path / "from-model", cfg)
    from_eval = tsne_embeddings(eval_dir, dataset, tmp_path / "from-eval", cfg)
    a, b = _saved(tmp_path / "from-model"), _saved(tmp_path / "from-eval")
    assert len(a["ids"]) == min(cap, N_TEST)
    # The same images, labels and classes; features equal within float tolerance
    # (one pass with two outputs against a pass through the embedding sub-model).
    for key in ("ids", "labels", "classes"):
        assert list(a[key]) == list(b[key]), key
    np.testing.assert_allclose(a["embeddings"], b["embeddings"], rtol=1e-4, atol=1e-5)
    # The plot's inputs: the coordinates, and the info its title and caption come from.
    scale = float(np.abs(a["tsne"]).max())
    np.testing.assert_allclose(a["tsne"], b["tsne"], atol=1e-3 * scale)
    drop = {"feature_spread"}
    assert {k: v for k, v in from_model.items() if k not in drop} == {
        k: v for k, v in from_eval.items() if k not in drop
    }
    assert from_model["feature_spread"] == pytest.approx(from_eval["feature_spread"], rel=1e-4)


@pytest.mark.training
def test_tsne_from_features_imports_no_tensorflow(
    dataset: Path, eval_dir: Path, tmp_path: Path
) -> None:
    """The pipeline's t-SNE task: no TensorFlow, no model; its timings name the backbone."""
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from fauna import timing\nfrom fauna.config import TsneConfig\n"
        "from fauna.steps.tsne import tsne_embeddings\n"
        "timing.begin('tsne')\n"
        f"tsne_embeddings(Path({str(eval_dir)!r}), Path({str(dataset)!r}), "
        f"Path({str(tmp_path / 'tsne')!r}), TsneConfig(max_samples=12))\n" + _loaded("LOADED")
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert _reported(done.stdout, "LOADED") == []
    spent = json.loads((tmp_path / "tsne" / timing.TIMINGS).read_text())
    assert spent["step"] == "tsne" and spent["backbone"] == "tiny"
    assert spent["data_in"] > 0 and spent["compute"] > 0 and spent["data_out"] > 0
    parts = sum(spent[k] for k in timing.PHASES)
    assert spent["total"] == pytest.approx(parts, abs=0.01)


@pytest.mark.training
def test_compare_and_a_first_publish_import_no_tensorflow(
    s3: str, dataset: Path, model_dir: Path, eval_dir: Path, tmp_path: Path
) -> None:
    """Nothing to re-score (no champion yet): neither task needs TensorFlow, so neither loads it."""
    from fauna.steps.tsne import tsne_embeddings

    tsne_embeddings(eval_dir, dataset, tmp_path / "tsne", TsneConfig(max_samples=12))
    cfg = {"train": {"backbones": ["tiny"]}, "pipeline": {"bucket": s3}}
    paths = {k: str(v) for k, v in locals().items() if isinstance(v, Path)}
    code = (
        "import sys\nfrom pathlib import Path\nfrom fauna.config import Config\n"
        "from fauna.steps.compare import compare_backbones\n"
        "from fauna.steps.publish import publish_run\n"
        f"p = {{k: Path(v) for k, v in {paths!r}.items()}}\ncfg = Config.from_dict({cfg!r})\n"
        "compare_backbones([p['model_dir']], [p['eval_dir']], [p['tmp_path'] / 'tsne'], "
        "p['tmp_path'] / 'report', cfg)\n"
        + _loaded("AFTER_COMPARE")
        + "result = publish_run(p['tmp_path'] / 'report', [p['model_dir']], p['dataset'], "
        "'run-1', p['tmp_path'] / 'published', cfg)\n"
        "print('PROMOTED', result.promotion.promoted)\n" + _loaded("AFTER_PUBLISH")
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "PROMOTED True" in done.stdout  # the first champion of its dataset
    assert _reported(done.stdout, "AFTER_COMPARE") == []
    assert _reported(done.stdout, "AFTER_PUBLISH") == []


@pytest.mark.training
def test_an_evaluation_without_features_is_one_line(
    dataset: Path, eval_dir: Path, tmp_path: Path
) -> None:
    import shutil

    from fauna.steps.tsne import tsne_embeddings

    bare = tmp_path / "eval"
    shutil.copytree(eval_dir, bare)
    (bare / FEATURES).unlink()
    with pytest.raises(EvaluationError, match="holds no features.npz .* train output"):
        tsne_embeddings(bare, dataset, tmp_path / "tsne", TsneConfig())
    assert not (tmp_path / "tsne").exists()


def test_timings_phases_add_up_and_the_table_lists_every_task(tmp_path: Path) -> None:
    import time

    timing.begin("split", backbone="x")
    with timing.phase("data_in"):
        time.sleep(0.05)
    time.sleep(0.05)  # compute: the time in no named phase
    with timing.phase("data_out"), step_output(tmp_path / "run" / "a", "split") as tmp:
        (tmp / "out.txt").write_text("x")
        time.sleep(0.05)
    spent = json.loads((tmp_path / "run" / "a" / timing.TIMINGS).read_text())
    assert spent["step"] == "split" and spent["backbone"] == "x"
    assert spent["startup"] > 0  # this process's age: pytest's start-up and imports
    for key in ("data_in", "compute", "data_out"):
        assert 0.05 <= spent[key] < 5, key
    assert spent["total"] == pytest.approx(sum(spent[k] for k in timing.PHASES), abs=0.01)
    # Another step's output is not timed as this one's; a copied folder is listed once.
    with step_output(tmp_path / "run" / "b", "augment") as tmp:
        (tmp / "out.txt").write_text("x")
    assert not (tmp_path / "run" / "b" / timing.TIMINGS).exists()
    (tmp_path / "run" / "copy").mkdir()
    (tmp_path / "run" / "copy" / timing.TIMINGS).write_bytes(
        (tmp_path / "run" / "a" / timing.TIMINGS).read_bytes()
    )
    tasks = timing.collect(tmp_path / "run")
    assert tasks == [spent]
    lines = timing.table(tasks).splitlines()
    assert lines[0].split() == ["task", "start-up", "data", "in", "compute", "data", "out", "total"]
    assert lines[1].split()[:2] == ["split", "x"] and lines[-1].startswith("all tasks")


def test_nothing_is_written_when_no_task_is_timed(tmp_path: Path) -> None:
    with timing.phase("data_out"), step_output(tmp_path / "a", "split") as tmp:
        (tmp / "out.txt").write_text("x")
    assert not (tmp_path / "a" / timing.TIMINGS).exists()


@pytest.mark.training
def test_cli_tsne_from_an_evaluation(dataset: Path, eval_dir: Path, tmp_path: Path) -> None:
    from fauna.cli import main

    out = tmp_path / "tsne"
    args = ["tsne", "--evaluation", str(eval_dir), "--data", str(dataset), "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "tsne.json").read_text())["backbone"] == "tiny"
    assert not (out / timing.TIMINGS).exists()  # only a pipeline task times itself
    with pytest.raises(SystemExit):  # one source: a model or an evaluation, not both
        main([*args[:3], "--model", str(eval_dir), *args[3:]])
