from kfp import dsl

from fauna.components import CPU_IMAGE


@dsl.component(base_image=CPU_IMAGE, install_kfp_package=False)
def ingest(config_json: str, source: str, raw: dsl.Output[dsl.Dataset]):
    """Fetch and check the dataset (empty `source` = data.source); bad files are quarantined."""
    from pathlib import Path

    from fauna.config import config_from_json
    from fauna.steps.ingest import ingest_dataset

    cfg = config_from_json(config_json)
    result = ingest_dataset(source or cfg.data.source, Path(raw.path), cfg.data)
    raw.metadata.update(result.metadata())
