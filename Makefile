# fauna — run `make help` for the list of targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.DEFAULT_GOAL := help
.PHONY: help install test test-fast test-slow lint format bench bench-preprocess bench-ingest bench-train bench-storage bench-serve bench-scale \
        local-run compile \
        submit schedule clean

# Images, push, the kind route and settings from env.sh (REGISTRY, TAG, BUCKET, ...).
include mk/cluster.mk
# What every cluster command passes: exactly the images `make image` builds, and the bucket.
CLUSTER_SETS = $(IMAGE_SETS) $(if $(BUCKET),--set pipeline.bucket=$(BUCKET))

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install fauna with test extras

# Two workers, one test file each (a file's module fixtures train once): many tests wait on
# subprocesses, injected S3 faults and servers, so two cores serve two files at once.
test: $(STAMP) ## run the test suite, all but the slow tier (installs first if needed)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow and not docker" $(PYTEST_ARGS)

# Four workers on two cores: many fast tests wait (on injected S3 faults, on subprocesses).
test-fast: $(STAMP) ## unit tests that train no model (about a minute)
	$(BIN)/python -m pytest -n 4 -m "not slow and not training and not docker" $(PYTEST_ARGS)

test-slow: $(STAMP) ## the slow tier: learnability on real images, end-to-end runs, long fault runs
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: bench-preprocess bench-ingest bench-train bench-storage bench-serve ## all benchmarks (speed and memory; not tests)

bench-preprocess: $(STAMP) ## preprocess images/s vs naive Pillow, 1 vs all cores, peak RSS
	$(BIN)/python bench/bench_preprocess.py

bench-ingest: $(STAMP) ## ingest peak RSS vs input size: folders, zip bombs, huge members, endless download
	$(BIN)/python bench/bench_ingest.py

bench-train: $(STAMP) ## training images/s: tf.data pipeline vs in-memory tensors; head phase: backbone every epoch vs features once
	$(BIN)/python bench/bench_train.py
	$(BIN)/python bench/bench_train.py --head-epochs 3 --images 256 --image-size 75
	$(BIN)/python bench/bench_train.py --head-epochs 3 --images 256 --image-size 128

bench-serve: $(STAMP) ## fauna serve requests/s, p50/p99: ResNet50 128 px, 1/4/16 clients, batching on/off
	$(BIN)/python bench/bench_serve.py

SCALE_SIZES ?= 1000,10000
bench-scale: $(STAMP) ## data steps + input epoch at 1k/10k images: s/img, peak RSS, disk (SCALE_SIZES=1000,10000,100000)
	$(BIN)/python bench/bench_scale.py --sizes $(SCALE_SIZES) --plot docs/scaling.png

bench-storage: $(STAMP) ## S3 files/s: parallel vs one at a time, loopback and 20 ms latency; CAS races
	$(BIN)/python bench/bench_storage.py --races 50 --fault-rounds 10 --stall

local-run: $(STAMP) ## run the whole pipeline on this machine (PROFILE, DATA, BACKBONES, EPOCHS, IMAGE_SIZE, BACKEND)
	$(BIN)/fauna local-run

compile: $(STAMP) ## compile the pipeline to pipeline.yaml (against the images of this commit)
	$(BIN)/fauna compile --out pipeline.yaml $(CLUSTER_SETS)

submit: $(STAMP) ## run the pipeline on Kubeflow, wait, retry failed tasks (env.sh: KF_PIPELINES_ENDPOINT, REGISTRY, BUCKET)
	$(BIN)/fauna submit --wait --config params.yaml $(CLUSTER_SETS) $(SUBMIT_ARGS)

# Opt-in: the chart's CronJob is the default scheduler; run this only with schedule.enabled=false.
schedule: $(STAMP) ## KFP recurring run instead of the chart's CronJob (CRON="0 0 3 * * 0" required, NAME=...)
	@if [ -z "$(CRON)" ]; then \
	  echo "schedule: give CRON=\"0 0 3 * * 0\" (KFP: 6 fields, seconds first); the chart's CronJob" \
	       "already schedules retraining unless installed with schedule.enabled=false" >&2; exit 2; fi
	$(BIN)/fauna schedule --config params.yaml --cron "$(CRON)" \
	  --name $(or $(NAME),fauna-retraining) $(CLUSTER_SETS)

clean: ## remove build outputs and local runs (keeps .venv)
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache runs pipeline.yaml
