"""The rendered report shows its uncertainty: checked on real rendered files, parsed.

Compare runs over hand-made step outputs (tests/test_compare.py's `make_run`, known
numbers), plus what evaluate writes for the report (thumbnails of misclassified test
images, per-class precision and recall); one test runs the real evaluate on a tiny
trained model. The HTML is parsed (stdlib html.parser) and its tables read cell by cell.
"""

from __future__ import annotations

import io
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image
from test_compare import CLASSES, METRICS, make_run, separable_share

from fauna.config import PAPER_CLASSES, Config

# The champion policy's confidence (`compare.confidence`): what every interval is at.
CONF = Config().compare.confidence

# ----------------------------------------------------------------- reading the HTML


class Page(HTMLParser):
    """Tables (cells with whether they are bold and their small note), images, text."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: list[list[list[dict]]] = []
        self.images: list[dict[str, str]] = []
        self.text_parts: list[str] = []
        self._cell: dict | None = None
        self._in: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self._in.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = {"text": "", "bold": False, "note": ""}
        elif tag == "b" and self._cell is not None:
            self._cell["bold"] = True
        elif tag == "img":
            self.images.append(a)
            self._in.pop()
        elif tag == "span" and "ci" in (a.get("class") or ""):
            self._in[-1] = "ci"

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(self._cell)
            self._cell = None
        if self._in:
            self._in.pop()

    def handle_data(self, data):
        self.text_parts.append(data)
        if self._cell is not None:
            key = "note" if "ci" in self._in else "text"
            self._cell[key] += data.strip()

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.text_parts).split())

    def table_with(self, header: str) -> list[dict[str, dict]]:
        """The first table with that column header, as rows keyed by header."""
        for table in self.tables:
            heads = [c["text"] for c in table[0]]
            if header in heads:
                return [dict(zip(heads, row, strict=True)) for row in table[1:]]
        raise AssertionError(f"no table with a {header!r} column")


def _exact(p: float, n: int) -> tuple[float, float]:
    """The Clopper-Pearson interval at the policy's confidence by SciPy's binomial test, not
    by fauna.score.policy's own code, so the test does not check the code against itself."""
    from scipy.stats import binomtest

    ci = binomtest(round(p * n), n).proportion_ci(CONF, method="exact")
    return ci.low, ci.high


# ------------------------------------------------------------ making a comparison


def _thumb(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), color).save(buf, format="JPEG")
    return buf.getvalue()


def add_misclassified(ev: Path, pairs: list[tuple[str, str, int]]) -> None:
    """evaluate's thumbnails and index in its contract shape: (true, predicted, how many)."""
    (ev / "misclassified").mkdir()
    images, n = [], 0
    for true, pred, count in pairs:
        for i in range(count):
            (ev / "misclassified" / f"{n:03d}.jpg").write_bytes(_thumb((40 * n % 255, 90, 160)))
            images.append(
                {"id": f"test/{true}/{i}.jpg", "true": true, "predicted": pred}
                | {"confidence": 0.9 - 0.1 * i, "file": f"misclassified/{n:03d}.jpg"}
            )
            n += 1
    (ev / "misclassified.json").write_text(json.dumps({"size": 64, "images": images}))


def compare(
    root: Path,
    classes: list[str] = CLASSES,
    synthetic: bool = True,
    misclassified: bool = True,
) -> Path:
    from fauna.steps.compare import compare_backbones

    runs = {b: make_run(root, b, synthetic, classes) for b in METRICS}
    if misclassified:
        add_misclassified(
            runs["resnet50"][1], [(classes[1], classes[2], 3), (classes[0], classes[2], 1)]
        )
    out = root / "report"
    compare_backbones(*(list(r) for r in zip(*runs.values(), strict=True)), out, Config())
    return out


def _page(out: Path) -> Page:
    return Page((out / "report.html").read_text())


# ----------------------------------------------------------------------- the tests


def test_chance_test_size_and_intervals_beside_the_scores(tmp_path: Path) -> None:
    out = compare(tmp_path)
    page = _page(out)
    assert "Measured on 30 test images, 3 classes" in page.text
    assert "chance (1/3) 33.33% top-1" in page.text
    # The largest test class: make_run writes 10 test images per class.
    assert "always answering the largest class 33.33% top-1" in page.text
    share = separable_share(30, Config().compare.confidence)
    assert f"30 test images can separate differences of about {share:.0%} at best." in page.text
    rows = {r["backbone"]["text"]: r for r in page.table_with("top-1")}
    for backbone, m in METRICS.items():
        row = rows[backbone]
        assert row["top-1"]["text"] == f"{100 * m['top1']:.2f}%"
        low, high = _exact(m["top1"], 30)
        assert row["top-1"]["note"] == f"{100 * low:.1f}–{100 * high:.1f}%"
        assert row["test images"]["text"] == "30"
        # The champion metric: the interval compare's policy measured (metrics.json).
        iv = json.loads((out / "metrics.json").read_text())["backbones"][backbone]["interval"]
        assert row["macro-F1"]["note"] == f"{iv['low']:.3f}–{iv['high']:.3f}"
        assert row["weighted-F1"]["note"] == ""  # no interval measured for it: none invented
    assert rows["resnet50"]["top-1"]["bold"] and not rows["vgg16"]["top-1"]["bold"]
    assert f"top-1: {CONF:.0%} exact binomial (Clopper-Pearson) interval on the test" in page.text
    md = (out / "report.md").read_text()
    low, high = _exact(0.72, 30)
    assert f"**72.00%** [{100 * low:.1f}–{100 * high:.1f}%]" in md


def test_top3_is_not_ranked_when_trivial(tmp_path: Path) -> None:
    """3 classes: top-3 is 100% for any model, so it is neither bold nor given an interval."""
    page = _page(compare(tmp_path / "three"))
    top3 = [r["top-3"] for r in page.table_with("top-3")]
    assert not any(c["bold"] for c in top3) and all(c["note"] == "" for c in top3)
    assert "With 3 classes top-3 is 100% for any model: not ranked. ROC-AUC" in page.text
    four = _page(compare(tmp_path / "four", classes=[*CLASSES, "mole"], misclassified=False))
    top3 = {r["backbone"]["text"]: r["top-3"] for r in four.table_with("top-3")}
    assert top3["resnet50"]["bold"] and top3["resnet50"]["note"]
    assert "not ranked" not in four.text.split("Training")[0].replace("flagged models", "")
    assert "25.00% top-1, 75.00% top-3" in four.text


def test_champion_box_says_by_how_much_and_how_sure(tmp_path: Path) -> None:
    from fauna.report.render import render_report

    out = compare(tmp_path)
    page = _page(out)
    assert "Ahead of vgg16 (0.5500) by 0.1500 macro-F1 on 30 test images." in page.text
    assert "resnet50 is ahead of the next best: macro-F1 better than vgg16 by" in page.text
    # A report.json from before compare's champion policy: the lead's certainty unmeasured.
    data = json.loads((out / "report.json").read_text())
    for row in data["backbones"]:
        row.pop("interval", None)
    del data["champion"]["evidence"], data["resolution"]
    render_report(data, out)
    page = _page(out)
    assert "Champion: resnet50, best by macro-F1: 0.7000 of 2 backbones." in page.text
    assert "How sure that lead is was not measured" in page.text
    # What compare's champion policy adds, rendered where present.
    given = {"resnet50": (0.52, 0.86), "vgg16": (0.38, 0.71)}
    for row in data["backbones"]:
        low, high = given[row["backbone"]]
        row |= {"interval": {"low": low, "high": high, "confidence": CONF}}
    evidence = f"Better than vgg16 by 0.150 ± 0.120 ({CONF:.0%}, paired bootstrap)."
    data["champion"]["evidence"] = evidence
    data["resolution"] = "30 test images can separate differences of about 12 points."
    render_report(data, out)
    page = _page(out)
    assert f"({CONF:.0%} interval 0.5200–0.8600) of 2 backbones" in page.text
    assert evidence in page.text
    assert "not measured" not in page.text
    assert "30 test images can separate differences of about 12 points." in page.text
    rows = {r["backbone"]["text"]: r for r in page.table_with("macro-F1")}
    assert rows["resnet50"]["macro-F1"]["note"] == "0.520–0.860"
    assert rows["vgg16"]["macro-F1"]["note"] == "0.380–0.710"


def test_misclassified_thumbnails_are_inlined_by_pair(tmp_path: Path) -> None:
    out = compare(tmp_path)
    page = _page(out)
    thumbs = [i for i in page.images if i["src"].startswith("data:image/jpeg;base64,")]
    assert len(thumbs) == 4
    assert [t["title"] for t in thumbs][:3] == [f"test/grizzly+bear/{i}.jpg" for i in range(3)]
    assert "grizzly bear → killer whale" in page.text and "antelope → killer whale" in page.text
    assert "90% sure" in page.text
    assert all(s["src"].startswith("data:image/") for s in page.images)  # one file
    assert (out / "images" / "resnet50-misclassified" / "000.jpg").is_file()
    assert "images/resnet50-misclassified/003.jpg" in (out / "report.md").read_text()


def test_per_class_precision_and_recall_beside_f1(tmp_path: Path) -> None:
    page = _page(compare(tmp_path))
    rows = {r["class"]["text"]: r for r in page.table_with("resnet50 F1")}
    assert set(rows) == {"antelope", "grizzly bear", "killer whale"}
    antelope = rows["antelope"]
    assert antelope["resnet50 P"]["text"] == "0.5000" and antelope["resnet50 R"]["text"] == "0.5000"
    assert antelope["resnet50 F1"]["text"] == "0.7000" and antelope["resnet50 F1"]["bold"]
    assert antelope["vgg16 F1"]["text"] == "0.5000" and not antelope["vgg16 F1"]["bold"]
    assert antelope["test images"]["text"] == "10"


def test_learning_curves_of_all_backbones_on_one_chart_per_metric(tmp_path: Path) -> None:
    out = compare(tmp_path)
    for key in ("loss", "accuracy"):
        with Image.open(out / "images" / f"learning-curves-{key}.png") as img:
            assert img.format == "PNG" and img.size[0] > 400
    page = _page(out)
    captions = [i["alt"] for i in page.images if i["alt"].endswith("validation dashed")]
    assert captions[0].startswith("loss per epoch, every backbone")
    assert len(captions) == 2
    # Each backbone's own plot (AUC, macro-F1, the fine-tuning line) stays, folded below.
    assert "Each backbone's own curves" in page.text
    assert any("vgg16: training history" in i["alt"] for i in page.images)
    html = (out / "report.html").read_text()
    assert html.index("<details><summary>Each backbone") > html.index("every backbone: train")


def test_whole_number_epoch_ticks(tmp_path: Path) -> None:
    from matplotlib.figure import Figure

    from fauna import plots

    drawn: list[Figure] = []
    real = plots.save_png
    plots.save_png = lambda fig, path: (drawn.append(fig), real(fig, path))[1]
    try:
        history = [{"epoch": e, "loss": 1 / (e + 1), "val_loss": 1.2 / (e + 1)} for e in range(3)]
        plots.plot_learning_curves(
            {"a": history, "b": history[:2]}, "loss", "loss", tmp_path / "c.png"
        )
    finally:
        plots.save_png = real
    ax = drawn[0].axes[0]
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert len(ax.lines) == 4  # train and validation of two backbones


def test_paper_sentence_only_where_the_paper_applies(tmp_path: Path) -> None:
    sentence = "The paper found most errors between species that look alike"
    assert sentence not in _page(compare(tmp_path / "other")).text
    paper = compare(tmp_path / "paper", classes=list(PAPER_CLASSES), synthetic=False)
    assert sentence in _page(paper).text
    assert sentence in (paper / "report.md").read_text()


@pytest.mark.training
def test_real_evaluate_writes_thumbnails_and_the_report_shows_them(tmp_path: Path, capsys) -> None:
    """A tiny trained model through the real evaluate: thumbnails of its real mistakes."""
    from test_evaluate import make_dataset_dir, make_model_dir

    from fauna.cli import main
    from fauna.steps.compare import compare_backbones

    data = make_dataset_dir(tmp_path / "data")
    model = make_model_dir(tmp_path / "model", data, "tiny", 1, 1e-3)
    ev = tmp_path / "eval"
    assert main(["evaluate", "--model", str(model), "--data", str(data), "--out", str(ev)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().splitlines()) == 1  # the JSON, for a pipe (not a terminal)
    assert captured.err.count("weighted-F1") == 1  # the summary once
    assert "\r" not in captured.err and "batch" not in captured.err  # no bar off a terminal
    metrics = json.loads((ev / "metrics.json").read_text())
    index = json.loads((ev / "misclassified.json").read_text())
    pairs = {(p["true"], p["predicted"]): p["count"] for p in metrics["most_confused"]}
    assert index["images"], "a one-epoch model makes mistakes"
    for entry in index["images"]:
        assert entry["true"] != entry["predicted"]
        assert (entry["true"], entry["predicted"]) in pairs
        with Image.open(ev / entry["file"]) as img:
            assert img.format == "JPEG" and max(img.size) <= 64
    per_pair = {
        k: sum(1 for e in index["images"] if (e["true"], e["predicted"]) == k) for k in pairs
    }
    assert all(per_pair[k] == min(4, n) for k, n in pairs.items())
    out = tmp_path / "report"
    compare_backbones([model], [ev], [], out, Config(), data_dir=data)
    page = _page(out)
    thumbs = [i for i in page.images if i["src"].startswith("data:image/jpeg")]
    assert len(thumbs) == len(index["images"])
    assert "tiny P" in [c["text"] for t in page.tables for c in t[0]]


def test_evaluate_bar_total_from_the_manifest(tmp_path: Path) -> None:
    """The bar's total: the split's batches, counted in the manifest (None without one)."""
    from fauna.score.evaluation import INFERENCE_BATCH, split_batches

    assert split_batches(tmp_path, "test") is None
    rows = ["id,label,split"] + [f"{i},a,{'test' if i % 2 else 'train'}" for i in range(300)]
    (tmp_path / "manifest.csv").write_text("\n".join(rows) + "\n")
    assert split_batches(tmp_path, "test") == math.ceil(150 / INFERENCE_BATCH)
    assert split_batches(tmp_path, "val") is None


def test_policy_numbers_in_their_shapes(tmp_path: Path) -> None:
    """The policy's resolution as a share, its top-1 interval, a row without an interval."""
    from fauna.report.render import render_report

    out = compare(tmp_path)
    data = json.loads((out / "report.json").read_text())
    data |= {"metric": "top1", "resolution": 5 / 30, "chance": 1 / 3, "n_test": 30}
    data["champion"] |= {"metric": "top1", "value": 0.72}
    for row in data["backbones"]:
        given = {"low": 0.55, "high": 0.86}  # no confidence said: the configured one
        row["interval"] = given if row["backbone"] == "resnet50" else None
    render_report(data, out)
    page = _page(out)
    assert "30 test images can separate differences of about 17% at best." in page.text
    rows = {r["backbone"]["text"]: r for r in page.table_with("top-1")}
    assert rows["resnet50"]["top-1"]["note"] == "55.0–86.0%"  # measured, not computed
    assert f"top-1 accuracy: the {CONF:.0%} interval compare measured" in page.text
    assert f"top-3: {CONF:.0%} exact" not in page.text  # 3 classes: top-3 is trivial
    assert f"Champion: resnet50, best by top-1 accuracy: 0.7200 ({CONF:.0%} interval" in page.text


def test_the_tie_break_reads_the_metric_specs_validation_counterpart(tmp_path: Path) -> None:
    """history.json's score at the kept epoch: the spec's validation metric, a loss negated,
    minus val_loss for a metric training does not measure (weighted-F1)."""
    from fauna.report.gather import validation_score

    history = [
        {"epoch": e, "val_loss": 1.0 / e, "val_accuracy": 0.2 * e, "val_top3_accuracy": 0.3 * e}
        | {"val_macro_f1": 0.1 * e, "val_auc": 0.5 + 0.1 * e}
        for e in (1, 2, 3)
    ]
    (tmp_path / "history.json").write_text(json.dumps(history))
    info = {"backbone": "vgg16", "weights": None, "image_size": 32, "weights_from_epoch": 1}
    (tmp_path / "train_info.json").write_text(json.dumps(info))
    expected = {"top1": 0.4, "top3": 0.6, "macro_f1": 0.2, "roc_auc": 0.7, "loss": -0.5}
    for metric, value in (expected | {"weighted_f1": -0.5, "neg_loss": -0.5}).items():
        assert validation_score(tmp_path, metric) == pytest.approx(value), metric


def test_a_metric_added_to_the_spec_is_a_column_of_the_results_table(tmp_path, monkeypatch):
    """The results table is the metric spec's: a new row there (here one where lower is
    better, and a top-k accuracy) is a column with its header, format and direction, with
    no edit to fauna.report.tables."""
    from fauna.report.render import render_report
    from fauna.score import metrics
    from fauna.score.metrics import MetricSpec

    out = compare(tmp_path)
    data = json.loads((out / "report.json").read_text())
    error = MetricSpec("brier", "Brier score", False, ".3f", False, short="Brier")
    top2 = MetricSpec("top2", "top-2 accuracy", True, ".4f", False, short="top-2", top_k=2)
    monkeypatch.setattr(metrics, "SPECS", (*metrics.SPECS, top2, error))
    values = {"resnet50": (0.21, 0.9), "vgg16": (0.35, 0.8)}
    for row in data["backbones"]:
        row["brier"], row["top2"] = values[row["backbone"]]
    render_report(data, out)
    page = _page(out)
    results = next(t for t in page.tables if "Brier" in [c["text"] for c in t[0]])
    assert [c["text"] for c in results[0]][-3:] == ["top-2", "Brier", "test images"]
    rows = {r["backbone"]["text"]: r for r in page.table_with("Brier")}
    assert rows["resnet50"]["Brier"]["text"] == "0.210" and rows["resnet50"]["Brier"]["bold"]
    assert rows["vgg16"]["Brier"]["text"] == "0.350" and not rows["vgg16"]["Brier"]["bold"]
    # A top-k accuracy: a percentage with its exact interval, ranked (2 < 3 classes).
    low, high = _exact(0.9, 30)
    assert rows["resnet50"]["top-2"]["text"] == "90.00%" and rows["resnet50"]["top-2"]["bold"]
    assert rows["resnet50"]["top-2"]["note"] == f"{100 * low:.1f}–{100 * high:.1f}%"
    assert f"top-1 and top-2: {CONF:.0%} exact binomial" in page.text
    assert "| Brier |" in (out / "report.md").read_text()
