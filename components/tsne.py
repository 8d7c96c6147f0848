from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def tsne(
    tsne_config: dict,
    evaluation: dsl.Input[dsl.Dataset],
    data: dsl.Input[dsl.Dataset],
    tsne: dsl.Output[dsl.Dataset],
    plot: dsl.Output[dsl.HTML],
):
    """t-SNE of the penultimate-layer features of the test images (PNG, NPZ and an HTML view).

    The features come from the evaluate task's output (features.npz): this task loads no
    model and imports no TensorFlow.
    """
    import shutil
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import section
    from fauna.steps.tsne import tsne_embeddings

    logs.configure()
    timing.begin("tsne")  # start-up: the process's age now
    out = Path(tsne.path)
    cfg = section("tsne", tsne_config)
    info = tsne_embeddings(Path(evaluation.path), Path(data.path), out, cfg)
    # The KFP UI renders an HTML artifact's file itself: the page, images inlined.
    Path(plot.path).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out / "tsne.html", plot.path)
    tsne.metadata.update({"backbone": info["backbone"], "n": info["n"]})
