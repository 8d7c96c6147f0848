"""t-SNE of each model's learned features (the paper's feature plots).

The test images go through the model up to its penultimate ("embedding") layer;
a stratified sample (at most `max_samples`, for speed: t-SNE is the slow part)
is projected to 2-D and plotted coloured by class.
"""

from __future__ import annotations

import html
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from fauna.config import Config, TsneConfig
from fauna.dataset import (
    CLASSES,
    SOURCE,
    carry_forward,
    display_name,
    write_json,
)
from fauna.plots import class_colors, html_image, html_page, save_png
from fauna.records import FEATURES, shard_paths
from fauna.steps.evaluate import (
    EvaluationError,
    check_inputs,
    load_trained_model,
    model_info,
    read_source,
    run_inference,
)

log = logging.getLogger(__name__)

MIN_SAMPLES = 5


def embedding_model(model: Any) -> Any:
    """A sub-model from the raw pixels to the penultimate layer's output."""
    import keras

    for name, use_input in (("embedding", False), ("predictions", True)):
        try:
            layer = model.get_layer(name)
        except ValueError:
            continue
        return keras.Model(model.inputs, layer.input if use_input else layer.output)
    raise EvaluationError("the model has neither an 'embedding' nor a 'predictions' layer")


def split_labels(data_dir: Path, split: str = "test") -> tuple[list[str], np.ndarray]:
    """Ids and label indices of a split, without decoding any image."""
    import tensorflow as tf

    paths = [str(p) for p in shard_paths(Path(data_dir) / split)]
    if not paths:
        raise EvaluationError(f"no {split} shards in {data_dir}")
    wanted = {k: FEATURES[k] for k in ("image/id", "image/class/label")}
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


def plot_tsne(
    coords: np.ndarray, labels: np.ndarray, classes: list[str], path: Path, title: str
) -> Path:
    """Scatter coloured by class, the legend outside the axes."""
    fig = Figure(figsize=(11, 8))
    ax = fig.add_subplot(1, 1, 1)
    colors = class_colors(len(classes))
    size = 30 if len(labels) < 500 else 12
    for i, name in enumerate(classes):
        pts = coords[labels == i]
        if len(pts):
            ax.scatter(
                pts[:, 0], pts[:, 1], s=size, color=colors[i], label=display_name(name), alpha=0.85
            )
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title)
    ax.legend(
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        fontsize=8,
        markerscale=1.6 if size < 20 else 1.0,
        frameon=False,
        ncol=1 if len(classes) <= 32 else 2,
    )
    return save_png(fig, path)


def tsne_embeddings(model_dir: Path, data_dir: Path, out: Path, cfg: TsneConfig) -> dict:
    """Embeddings + t-SNE plot of the test split; writes PNG, NPZ, JSON and HTML into `out`."""
    from sklearn.manifold import TSNE

    model_dir, data_dir, out = Path(model_dir), Path(data_dir), Path(out)
    classes, image_size = check_inputs(model_dir, data_dir)
    backbone = str(model_info(model_dir)["backbone"])
    all_ids, all_labels = split_labels(data_dir)
    chosen = stratified_sample(all_labels, cfg.max_samples, cfg.seed)
    keep = {all_ids[i] for i in chosen}
    log.info(f"{backbone}: embedding {len(keep)} of {len(all_ids)} test images")

    model = embedding_model(load_trained_model(model_dir))
    emb, labels, ids = run_inference(
        model, data_dir, image_size, len(classes), keep_ids=keep, desc=f"embed {backbone}"
    )
    emb = emb.reshape(len(emb), -1).astype(np.float32)
    n = len(emb)
    if n < MIN_SAMPLES:
        raise EvaluationError(f"t-SNE needs at least {MIN_SAMPLES} test images, got {n}")
    # sklearn needs perplexity < n; about n/3 is the usual ceiling for small samples.
    perplexity = float(min(cfg.perplexity, (n - 1) / 3))
    coords = TSNE(
        n_components=2, init="pca", perplexity=perplexity, random_state=cfg.seed
    ).fit_transform(emb)

    out.mkdir(parents=True, exist_ok=True)
    title = f"{backbone}: t-SNE of penultimate-layer features ({n} test images)"
    png = plot_tsne(coords, labels, classes, out / "tsne.png", title)
    np.savez_compressed(
        out / "embeddings.npz",
        embeddings=emb,
        tsne=coords.astype(np.float32),
        labels=labels.astype(np.int64),
        ids=np.array(ids),
        classes=np.array(classes),
    )
    info = {
        "backbone": backbone,
        "n": n,
        "n_test": len(all_ids),
        "perplexity": perplexity,
        "embedding_dim": int(emb.shape[1]),
        "seed": cfg.seed,
        "synthetic": bool(read_source(data_dir, model_dir).get("synthetic", True)),
    }
    write_json(out / "tsne.json", info)
    warning = "<p class='warning'>Synthetic data: generated patterns, not animals.</p>\n"
    body = (
        (warning if info["synthetic"] else "")
        + f"<h2>{html.escape(title)}</h2>\n"
        + html_image(png, f"t-SNE of {backbone}", f"perplexity {perplexity:g}, PCA init")
    )
    (out / "tsne.html").write_text(html_page(f"t-SNE: {backbone}", body))
    carry_forward((CLASSES, SOURCE), (data_dir, model_dir), out)
    log.info(f"{backbone}: wrote {png}")
    return info


def add_arguments(parser: Any) -> None:
    parser.add_argument("--model", required=True, help="train step output folder (model.keras)")
    parser.add_argument("--data", required=True, help="dataset folder with a test/ split")
    parser.add_argument("--out", required=True, help="folder for tsne.png, embeddings.npz, ...")


def run(args: Any, cfg: Config) -> int:
    info = tsne_embeddings(Path(args.model), Path(args.data), Path(args.out), cfg.tsne)
    print(json.dumps(info))
    return 0
