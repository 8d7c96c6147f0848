"""Serving's init container: copy the champion model's SavedModel export for TF Serving.

Reads the champion pointer (a small JSON naming "model_uri"), downloads
<model_uri>/<EXPORT_SUBPATH>/ into MODEL_DIR (TF Serving's numbered version folder)
through fauna's storage layer, so S3_ENDPOINT_URL and the AWS_* variables apply.
Exits 1 with one line when there is no champion yet or the export is missing;
the pod then retries with Kubernetes' backoff.
"""

import json
import os
import sys

from fauna import storage
from fauna.errors import FaunaError


def main() -> int:
    pointer = os.environ["CHAMPION_URI"]
    target = os.environ["MODEL_DIR"]
    try:
        champion = json.loads(storage.read_text(pointer))
        export = champion["model_uri"].rstrip("/") + "/" + os.environ["EXPORT_SUBPATH"].strip("/")
        count = storage.download_dir(export, target)
    except (FaunaError, KeyError, ValueError) as exc:
        print(f"sync-champion: cannot load the champion from {pointer}: {exc}", file=sys.stderr)
        return 1
    print(
        f"sync-champion: {count} files from {export} -> {target} "
        f"(run {champion.get('run_id', '?')}, backbone {champion.get('backbone', '?')})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
