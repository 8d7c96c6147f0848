#!/usr/bin/env bash
# `make local-down`: delete the kind cluster of the kind route, and everything in it
# (KFP, MinIO and its data). Idempotent: nothing to do when the cluster is gone.
#   DRY_RUN=1 scripts/kind-local-down.sh   # print the command instead of running it
set -euo pipefail

CLUSTER=${CLUSTER:-fauna}
DRY_RUN=${DRY_RUN:-0}

run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

if [[ $DRY_RUN != 1 ]] && ! command -v kind >/dev/null 2>&1; then
  echo "kind-local-down: kind is not installed: no kind cluster to remove" >&2
  exit 0
fi
if [[ $DRY_RUN == 1 ]] || kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  run kind delete cluster --name "$CLUSTER"
else
  echo "kind-local-down: no kind cluster named $CLUSTER" >&2
fi
