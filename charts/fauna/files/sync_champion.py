"""Serving's init container: copy the champion model's SavedModel export for TF Serving.

Champions are kept per dataset (`fauna.store.champion`: s3://<bucket>/models/<dataset>/
champion.json). DATASET names the one to serve (a dataset's name or key); empty means
the only dataset that has a champion. Downloads <model_uri>/<EXPORT_SUBPATH>/ into
MODEL_DIR (TF Serving's numbered version folder) through fauna's storage layer, so
S3_ENDPOINT_URL and the AWS_* variables apply. Exits 1 with one line when there is no
champion yet or the export is missing; the pod then retries with Kubernetes' backoff.
"""

import os
import sys

from fauna.errors import FaunaError
from fauna.store import storage
from fauna.store.champion import find_champion


def main() -> int:
    bucket = os.environ["BUCKET"]
    dataset = os.environ.get("DATASET", "")
    target = os.environ["MODEL_DIR"]
    try:
        champion = find_champion(bucket, dataset)
        export = champion["model_uri"].rstrip("/") + "/" + os.environ["EXPORT_SUBPATH"].strip("/")
        count = storage.download_dir(export, target)
    except (FaunaError, KeyError, ValueError) as exc:
        where = f"s3://{bucket}" + (f" (dataset {dataset})" if dataset else "")
        print(f"sync-champion: cannot load the champion from {where}: {exc}", file=sys.stderr)
        return 1
    print(
        f"sync-champion: {count} files from {export} -> {target} "
        f"(run {champion.get('run_id', '?')}, backbone {champion.get('backbone', '?')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
