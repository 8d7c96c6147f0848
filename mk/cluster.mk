# Images, the kind route and the cluster settings; included by the Makefile, and
# usable alone (`make -f mk/cluster.mk image-ref-cpu`), which scripts/kind-local-run.sh does.
# Settings come from env.sh when present (copy env.sh.example): REGISTRY, TAG, ...

-include env.sh

BIN ?= .venv/bin
DOCKER ?= docker
# Where the images go; "localhost" = built for this machine (and kind) only.
REGISTRY ?= localhost
# An immutable tag: the commit, plus -dirty when the files the image is built from
# differ from it (KFP caches on the image reference, so a tag must name one content).
IMAGE_INPUTS := pyproject.toml README.md src components pipelines docker .dockerignore
ifeq ($(origin TAG),undefined)
TAG := $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)$(if $(shell git status --porcelain -- $(IMAGE_INPUTS) 2>/dev/null),-dirty)
endif
IMAGE_CPU := $(REGISTRY)/fauna-cpu:$(TAG)
IMAGE_GPU := $(REGISTRY)/fauna-gpu:$(TAG)
# What compile/submit/schedule pass so the pipeline runs exactly these images.
IMAGE_SETS := --set pipeline.image_cpu=$(IMAGE_CPU) --set pipeline.image_gpu=$(IMAGE_GPU)

SOURCE_URL ?= $(shell git config --get remote.origin.url 2>/dev/null)
# The constraints are resolved for Linux x86-64 (and the CUDA wheels exist only there).
DOCKER_PLATFORM ?= linux/amd64
DOCKER_BUILD = $(DOCKER) build --file docker/Dockerfile --platform $(DOCKER_PLATFORM) \
	--build-arg REVISION=$(shell git rev-parse HEAD 2>/dev/null || echo unknown) \
	$(if $(SOURCE_URL),--build-arg SOURCE=$(SOURCE_URL))

.PHONY: image image-cpu image-gpu image-ref-cpu push push-check lock-images local-run-kind local-down

image: image-cpu image-gpu ## build both images: $REGISTRY/fauna-{cpu,gpu}:<git sha>

image-cpu: ## build the CPU image (data steps, evaluate, t-SNE, compare, publish, submit)
	$(DOCKER_BUILD) --target cpu --tag $(IMAGE_CPU) .

image-gpu: ## build the GPU image (training; TensorFlow with CUDA)
	$(DOCKER_BUILD) --target gpu --tag $(IMAGE_GPU) .

image-ref-cpu:
	@echo $(IMAGE_CPU)

push-check:
	@if [ "$(REGISTRY)" = localhost ]; then \
	  echo "push: set REGISTRY (in env.sh) to your registry, e.g. ghcr.io/your-org" >&2; exit 2; fi
	@case "$(TAG)" in *-dirty) if [ "$(ALLOW_DIRTY)" != 1 ]; then \
	  echo "push: $(TAG) is built from uncommitted files; commit first (or ALLOW_DIRTY=1)" >&2; \
	  exit 2; fi;; esac

push: push-check image ## push both images to $REGISTRY (set it in env.sh); refuses -dirty tags
	$(DOCKER) push $(IMAGE_CPU)
	$(DOCKER) push $(IMAGE_GPU)
	@echo "pushed $(IMAGE_CPU) and $(IMAGE_GPU); helm: --set image.registry=$(REGISTRY) --set image.tag=$(TAG)"

lock-images: $(STAMP) ## re-pin every package of the images (docker/constraints-*.txt) after changing pyproject.toml
	$(BIN)/python docker/lock.py

local-run-kind: $(STAMP) ## the whole pipeline on kind + MinIO + KFP (needs docker, kind, kubectl, helm)
	REGISTRY=$(REGISTRY) TAG=$(TAG) FAUNA=$(abspath $(BIN))/fauna PYTHON=$(abspath $(BIN))/python \
	  bash scripts/kind-local-run.sh

local-down: ## delete the kind cluster of the kind route
	bash scripts/kind-local-down.sh
