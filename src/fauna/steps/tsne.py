"""tsne: t-SNE of each model's learned features (the paper's feature plots).

The test images' penultimate-layer ("embedding") features: read from an evaluate
output (its features.npz, written in the same pass as its predictions: no model is
loaded, no TensorFlow imported; what the pipeline does), or computed by running a
trained model over the test split (given a train output, e.g. on the command line).
A stratified sample (at most `max_samples`, for speed: t-SNE is the slow part) is
projected to 2-D and plotted coloured by class; both routes pick the same sample.

Features that barely differ between images (a collapsed model: relative spread below
fauna.score.evaluation.MIN_FEATURE_SPREAD) are not projected: t-SNE would blow numerical
noise up into clusters that look like structure. The step then says so instead
(tsne.json `degenerate_reason`, the page), and writes no plot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from fauna import logs, timing
from fauna.config import Config, TsneConfig
from fauna.contracts import DATA_STEPS, EVALUATE_STEP, TRAIN_STEP, TSNE_INFO, TSNE_PNG, TSNE_STEP
from fauna.data.dataset import CLASSES, SOURCE, carry_forward, read_classes, write_json
from fauna.model.artifact import load_model, model_backbone
from fauna.score.evaluation import (
    FEATURES,
    MIN_FEATURE_SPREAD,
    EvaluationError,
    check_inputs,
    embedding_model,
    feature_spread,
    read_source,
    run_inference,
)
from fauna.step_output import read_marker, require_output, step_output

log = logging.getLogger(__name__)

STEP = TSNE_STEP
SOURCE_STEPS = (TRAIN_STEP, EVALUATE_STEP)
MIN_SAMPLES = 5


def split_labels(data_dir: Path, split: str = "test") -> tuple[list[str], np.ndarray]:
    """Ids and label indices of a split, without decoding any image."""
    import tensorflow as tf

    from fauna.data.records import features, shard_paths

    paths = [str(p) for p in shard_paths(Path(data_dir) / split)]
    if not paths:
        raise EvaluationError(f"no {split} shards in {data_dir}")
    spec = features()
    wanted = {k: spec[k] for k in ("image/id", "image/class/label")}
    ids: list[str] = []
    labels: list[np.ndarray] = []
    ds = tf.data.TFRecordDataset(paths).batch(1024).map(lambda s: tf.io.parse_example(s, wanted))
    for batch in ds.as_numpy_iterator():
        ids.extend(i.decode() for i in batch["image/id"])
        labels.append(batch["image/class/label"])
    return ids, np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def stratified_sample(labels: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """Indices of at most `cap` items, each class kept in proportion, chosen at random."""
    n = len(labels)
    if n <= cap:
        return np.arange(n)
    order = np.random.default_rng(seed).permutation(n)
    counts = np.bincount(labels)
    seen: dict[int, int] = {}
    rank = np.empty(n)
    for idx in order:  # position of each item within its class, in the random order
        lab = int(labels[idx])
        rank[idx] = seen.get(lab, 0) / counts[lab]
        seen[lab] = seen.get(lab, 0) + 1
    keys = rank[order]
    return np.sort(order[np.argsort(keys, kind="stable")[:cap]])


def pick_sample(ids: list[str], labels: np.ndarray, cfg: TsneConfig) -> np.ndarray:
    """Indices of the stratified sample, in id order: the same images and row order
    whichever order the test split was read in (evaluate's pass, or the shards')."""
    order = np.argsort(np.array(ids), kind="stable")
    return order[stratified_sample(labels[order], cfg.max_samples, cfg.seed)]


Embedded = tuple[str, np.ndarray, np.ndarray, list[str], list[str], int]


def _embed_from_evaluation(eval_dir: Path, data_dir: Path, cfg: TsneConfig) -> Embedded:
    """The stratified sample's rows of evaluate's features (no model, no TensorFlow)."""
    path = eval_dir / FEATURES
    if not path.is_file():
        raise EvaluationError(
            f"{eval_dir} holds no {FEATURES} (its model has no named penultimate layer): "
            "give the model's train output instead"
        )
    with timing.phase("data_in"), np.load(path) as npz:
        saved = {k: npz[k] for k in npz.files}
    classes = [str(c) for c in saved["classes"]]
    data_classes = read_classes(data_dir)
    if classes != data_classes:
        raise EvaluationError(
            f"{eval_dir} evaluated another class list than {data_dir}'s: "
            "give the data the model was evaluated on"
        )
    backbone, labels = str(saved["backbone"]), saved["labels"]
    rows = pick_sample([str(i) for i in saved["ids"]], labels, cfg)
    log.info(
        "%s: %s of %s test images, features from %s", backbone, len(rows), len(labels), eval_dir
    )
    emb = saved["features"][rows].astype(np.float32)
    return backbone, emb, labels[rows], [str(i) for i in saved["ids"][rows]], classes, len(labels)


def _embed(model_dir: Path, data_dir: Path, cfg: TsneConfig) -> Embedded:
    """Penultimate features of a stratified test sample, computed by running the model."""
    classes, image_size = check_inputs(model_dir, data_dir)
    backbone = model_backbone(model_dir)
    all_ids, all_labels = split_labels(data_dir)
    keep = {all_ids[i] for i in pick_sample(all_ids, all_labels, cfg)}
    log.info("%s: embedding %s of %s test images", backbone, len(keep), len(all_ids))
    model = embedding_model(load_model(model_dir))
    result = run_inference(
        model, data_dir, image_size, len(classes), keep_ids=keep, desc=f"embed {backbone}"
    )
    rows = np.argsort(np.array(result.ids), kind="stable")  # id order, as pick_sample's
    emb = result.outputs[0].reshape(len(result.ids), -1)[rows].astype(np.float32)
    ids = [result.ids[i] for i in rows]
    return backbone, emb, result.labels[rows], ids, classes, len(all_ids)


def embed_sample(source_dir: Path, data_dir: Path, cfg: TsneConfig) -> Embedded:
    """(backbone, features, labels, ids, classes, n_test) of the stratified test sample,
    from an evaluate output's features or from a train output's model."""
    source_dir, data_dir = Path(source_dir), Path(data_dir)
    require_output(source_dir, SOURCE_STEPS, role="--model/--evaluation")
    require_output(data_dir, DATA_STEPS, role="--data")
    if (read_marker(source_dir) or {}).get("step") == EVALUATE_STEP:
        embedded = _embed_from_evaluation(source_dir, data_dir, cfg)
    else:
        embedded = _embed(source_dir, data_dir, cfg)
    if len(embedded[1]) < MIN_SAMPLES:
        n = len(embedded[1])
        raise EvaluationError(f"t-SNE needs at least {MIN_SAMPLES} test images, got {n}")
    return embedded


def tsne_embeddings(source_dir: Path, data_dir: Path, out: Path, cfg: TsneConfig) -> dict:
    """Embeddings + t-SNE plot of the test split; writes PNG, NPZ, JSON and HTML into `out`.

    `source_dir`: an evaluate output (its features) or a train output (its model).
    """
    from fauna.plots import plot_tsne
    from fauna.report.render import tsne_page

    source_dir, data_dir, out = Path(source_dir), Path(data_dir), Path(out)
    backbone, emb, labels, ids, classes, n_test = embed_sample(source_dir, data_dir, cfg)
    timing.note(backbone=backbone)
    n, spread = len(emb), feature_spread(emb)
    # sklearn needs perplexity < n; about n/3 is the usual ceiling for small samples.
    perplexity = float(min(cfg.perplexity, (n - 1) / 3))
    skipped = None
    if spread < MIN_FEATURE_SPREAD:
        skipped = (
            f"its penultimate-layer features are the same for every image "
            f"(relative spread {spread:.1e}, below {MIN_FEATURE_SPREAD:g})"
        )
        log.warning("%s: no t-SNE: %s", backbone, skipped)
    info = {
        "backbone": backbone,
        "n": n,
        "n_test": n_test,
        "perplexity": perplexity,
        "embedding_dim": int(emb.shape[1]),
        "seed": cfg.seed,
        "feature_spread": spread,
        "degenerate_reason": skipped,
        "synthetic": bool(read_source(data_dir, source_dir).get("synthetic", True)),
    }
    title = f"{backbone}: t-SNE of penultimate-layer features ({n} test images)"
    coords = np.zeros((n, 2), dtype=np.float32)
    if skipped is None:
        coords = _project(emb, perplexity, cfg.seed)
    with timing.phase("data_out"), step_output(out, STEP) as tmp:
        png = None
        if skipped is None:
            png = plot_tsne(coords, labels, classes, tmp / TSNE_PNG, title)
        np.savez_compressed(
            tmp / "embeddings.npz",
            embeddings=emb,
            tsne=coords.astype(np.float32),
            labels=labels.astype(np.int64),
            ids=np.array(ids),
            classes=np.array(classes),
        )
        write_json(tmp / TSNE_INFO, info)
        caption = f"perplexity {perplexity:g}, PCA init"
        page = tsne_page(f"t-SNE: {backbone}", title, png, caption, info["synthetic"], skipped)
        (tmp / "tsne.html").write_text(page)
        carry_forward((CLASSES, SOURCE), (data_dir, source_dir), tmp)
    log.info("%s: wrote %s", backbone, out / "tsne.html")
    return info


def _project(emb: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(
        emb
    )


def add_arguments(parser: Any) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="train step output folder (runs the model)")
    source.add_argument(
        "--evaluation", help=f"evaluate step output folder (reuses its {FEATURES}: faster)"
    )
    parser.add_argument("--data", required=True, help="split or augment step output folder")
    parser.add_argument("--out", required=True, help="folder for tsne.png, embeddings.npz, ...")


def run(args: Any, cfg: Config) -> int:
    source = Path(args.evaluation or args.model)
    info = tsne_embeddings(source, Path(args.data), Path(args.out), cfg.tsne)
    logs.result(info)  # the summary is logged; this is for a pipe or a file
    return 0
