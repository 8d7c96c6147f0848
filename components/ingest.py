from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest(source: str, data_config: dict, raw: dsl.Output[dsl.Dataset]):
    """Fetch and check the dataset (empty `source` = data.source); bad files are quarantined."""
    from pathlib import Path

    from fauna import logs, timing
    from fauna.config import section
    from fauna.steps.ingest import ingest_dataset

    logs.configure()
    timing.begin("ingest")  # start-up: the process's age now
    cfg = section("data", data_config)
    result = ingest_dataset(source or cfg.source, Path(raw.path), cfg)
    raw.metadata.update(result.metadata())
