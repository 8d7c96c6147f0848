#!/usr/bin/env bash
# `make local-run` on kind + MinIO: the whole pipeline on a real (local) Kubeflow
# Pipelines, the way a cluster runs it. Every step is idempotent: run it again to
# reuse the cluster, the KFP install, the images and the release.
#
#   scripts/kind-local-run.sh              # usually through `make local-run BACKEND=kind`
#   DRY_RUN=1 scripts/kind-local-run.sh    # print each command instead of running it
#
# Settings (environment): CLUSTER (fauna), PIPELINE_VERSION (KFP backend, 2.17.2),
# REGISTRY/TAG (image names, as `make image`), DATA (a data source; default: Kaggle
# when KAGGLE_USERNAME/KAGGLE_KEY are set, else a generated sample), PROFILE (smoke),
# KFP_PORT (8888), UI_PORT (8080), MINIO_PORT (9000), KIND_NODE_IMAGE (kind's default),
# SUBMIT_ARGS (more `fauna submit` arguments, e.g. "--set train.backbones=[resnet50]").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLUSTER=${CLUSTER:-fauna}
CONTEXT="kind-$CLUSTER"
NAMESPACE=kubeflow
RELEASE=fauna
BUCKET=${BUCKET:-fauna}
PIPELINE_VERSION=${PIPELINE_VERSION:-2.17.2}
PROFILE=${PROFILE:-smoke}
KFP_PORT=${KFP_PORT:-8888}
UI_PORT=${UI_PORT:-8080}
MINIO_PORT=${MINIO_PORT:-9000}
# Local-only MinIO root credentials (the cluster is reachable through port-forward only).
MINIO_ROOT_USER=${MINIO_ROOT_USER:-fauna-local}
MINIO_ROOT_PASSWORD=${MINIO_ROOT_PASSWORD:-fauna-local-only}
FAUNA=${FAUNA:-$ROOT/.venv/bin/fauna}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
DRY_RUN=${DRY_RUN:-0}
KFP_MANIFESTS=github.com/kubeflow/pipelines/manifests/kustomize

say() { printf '\n==> %s\n' "$*" >&2; }

# Every command that changes something goes through run: DRY_RUN=1 prints it instead.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# A port-forward in the background, stopped by the EXIT trap.
FORWARDS=()
forward() {
  local service=$1 ports=$2
  if [[ $DRY_RUN == 1 ]]; then
    run kubectl --context "$CONTEXT" -n "$NAMESPACE" port-forward "svc/$service" "$ports" | sed 's/$/ \&/'
    return
  fi
  kubectl --context "$CONTEXT" -n "$NAMESPACE" port-forward "svc/$service" "$ports" >/dev/null 2>&1 &
  FORWARDS+=("$!")
  local port=${ports%%:*}
  for _ in $(seq 60); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "kind-local-run: port-forward to $service on localhost:$port did not come up" >&2
  return 1
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fauna-kind.XXXXXX")
cleanup() {
  local pid
  for pid in "${FORWARDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- prerequisites ------------------------------------------------------------
missing=()
for tool in docker kind kubectl helm git make; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  if [[ $DRY_RUN == 1 ]]; then
    echo "kind-local-run: (dry run) not installed here: ${missing[*]}" >&2
  else
    echo "kind-local-run: needs ${missing[*]} on PATH (docker, kind, kubectl, helm, git, make)" >&2
    exit 2
  fi
elif [[ $DRY_RUN != 1 ]] && ! docker info >/dev/null 2>&1; then
  echo "kind-local-run: the Docker engine is not reachable (docker info failed): start it first" >&2
  exit 2
fi
if [[ $DRY_RUN != 1 && ! -x $FAUNA ]]; then
  echo "kind-local-run: $FAUNA not found: run \`make install\` first" >&2
  exit 2
fi

# The image names `make image` uses (registry and git-SHA tag), from one place.
IMAGE_CPU=$(make --no-print-directory -s -C "$ROOT" -f mk/cluster.mk image-ref-cpu)
say "image $IMAGE_CPU, KFP $PIPELINE_VERSION, cluster $CLUSTER"

# --- the cluster ----------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "reusing the kind cluster $CLUSTER"
else
  say "creating the kind cluster $CLUSTER"
  run kind create cluster --name "$CLUSTER" --config "$ROOT/deploy/kind/kind-config.yaml" \
    ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi

# --- Kubeflow Pipelines, standalone, the official way ------------------------------
say "installing Kubeflow Pipelines $PIPELINE_VERSION (idempotent)"
run kubectl --context "$CONTEXT" apply -k "$KFP_MANIFESTS/cluster-scoped-resources?ref=$PIPELINE_VERSION"
run kubectl --context "$CONTEXT" wait --for condition=established --timeout=60s \
  crd/applications.app.k8s.io
run kubectl --context "$CONTEXT" apply -k "$KFP_MANIFESTS/env/platform-agnostic?ref=$PIPELINE_VERSION"
say "waiting for mysql, metadata-grpc and ml-pipeline (several minutes the first time)"
run kubectl --context "$CONTEXT" -n "$NAMESPACE" wait --for=condition=Available --timeout=900s \
  deployment/mysql deployment/metadata-grpc-deployment deployment/ml-pipeline

# --- the image, loaded into the node (pods use it with pull policy IfNotPresent) ----
say "building and loading $IMAGE_CPU"
run make -C "$ROOT" -f mk/cluster.mk image-cpu "TAG=${IMAGE_CPU##*:}"
run kind load docker-image "$IMAGE_CPU" --name "$CLUSTER"

# --- the chart: MinIO, the bucket, credentials, kfp-launcher pointing at MinIO ------
say "installing the fauna chart with MinIO"
# KFP ships a placeholder kfp-launcher ConfigMap; let the release own it.
run kubectl --context "$CONTEXT" -n "$NAMESPACE" annotate --overwrite configmap kfp-launcher \
  "meta.helm.sh/release-name=$RELEASE" "meta.helm.sh/release-namespace=$NAMESPACE"
run kubectl --context "$CONTEXT" -n "$NAMESPACE" label --overwrite configmap kfp-launcher \
  app.kubernetes.io/managed-by=Helm
# Credentials go through a private values file, never the command line.
VALUES="$WORK/credentials.yaml"
(
  umask 077
  printf 's3:\n  accessKeyId: "%s"\n  secretAccessKey: "%s"\n' \
    "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >"$VALUES"
  if [[ -n ${KAGGLE_USERNAME:-} && -n ${KAGGLE_KEY:-} ]]; then
    printf 'kaggle:\n  username: "%s"\n  key: "%s"\n' "$KAGGLE_USERNAME" "$KAGGLE_KEY" >>"$VALUES"
  fi
)
run helm upgrade --install "$RELEASE" "$ROOT/charts/fauna" --kube-context "$CONTEXT" \
  --namespace "$NAMESPACE" --values "$VALUES" \
  --set minio.enabled=true --set "s3.bucket=$BUCKET" \
  --set "image.registry=${IMAGE_CPU%/fauna-cpu:*}" --set "image.tag=${IMAGE_CPU##*:}" \
  --set image.pullPolicy=IfNotPresent --set schedule.enabled=false \
  --wait --timeout 10m

# --- submit through port-forwards ---------------------------------------------------
say "forwarding the KFP API (:$KFP_PORT), UI (:$UI_PORT) and MinIO (:$MINIO_PORT)"
forward ml-pipeline "$KFP_PORT:8888"
forward ml-pipeline-ui "$UI_PORT:80"
forward "$RELEASE-minio" "$MINIO_PORT:9000"
export S3_ENDPOINT_URL="http://127.0.0.1:$MINIO_PORT"
export AWS_ACCESS_KEY_ID="$MINIO_ROOT_USER" AWS_SECRET_ACCESS_KEY="$MINIO_ROOT_PASSWORD"
export AWS_REGION=us-east-1

data_args=()
if [[ -n ${DATA:-} ]]; then
  data_args=(--source "$DATA")
elif [[ -z ${KAGGLE_USERNAME:-} || -z ${KAGGLE_KEY:-} ]]; then
  say "no Kaggle credentials: using a generated sample dataset (not real animals)"
  sample="s3://$BUCKET/datasets/synthetic-sample"
  run "$FAUNA" synth --out "$WORK/sample" --classes 30 --per-class 24
  run "$PYTHON" -c 'import sys; from fauna.store.storage import upload_dir; upload_dir(*sys.argv[1:])' \
    "$WORK/sample" "$sample"
  data_args=(--source "$sample")
fi

# More `fauna submit` arguments, space-separated, e.g. "--set train.backbones=[resnet50]".
read -ra extra_args <<<"${SUBMIT_ARGS:-}"

say "submitting the pipeline (profile $PROFILE, CPU only) and waiting for it"
LOG="$WORK/submit.log"
run "$FAUNA" submit --host "http://localhost:$KFP_PORT" --wait --profile "$PROFILE" \
  --experiment fauna-local --set pipeline.use_gpu=false \
  --set "pipeline.image_cpu=$IMAGE_CPU" --set "pipeline.image_gpu=$IMAGE_CPU" \
  --set "pipeline.bucket=$BUCKET" "${data_args[@]}" "${extra_args[@]}" | tee "$LOG"

# `fauna submit` prints "submitted run <id>: <url>"; publish writes under runs/<id>/.
run_id=$(sed -n 's/^submitted run \([^: ]*\):.*/\1/p' "$LOG" 2>/dev/null | tail -n 1 || true)
cat <<EOF

Done. The run, in the KFP UI:
  kubectl --context $CONTEXT -n $NAMESPACE port-forward svc/ml-pipeline-ui $UI_PORT:80
  then open http://localhost:$UI_PORT/#/runs
The report and models (MinIO in the cluster):
  s3://$BUCKET/runs/${run_id:-<run-id>}/report/report.html
  kubectl --context $CONTEXT -n $NAMESPACE port-forward svc/$RELEASE-minio $MINIO_PORT:9000
  then S3_ENDPOINT_URL=http://localhost:$MINIO_PORT with AWS_ACCESS_KEY_ID=$MINIO_ROOT_USER
Remove everything: make local-down
EOF
