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
IMAGE_SERVE := $(REGISTRY)/fauna-serve:$(TAG)
# What compile/submit/schedule pass so the pipeline runs exactly these images.
IMAGE_SETS := --set pipeline.image_cpu=$(IMAGE_CPU) --set pipeline.image_gpu=$(IMAGE_GPU)

# Build settings, all optional (set them in env.sh or on the command line):
#   PYTHON_IMAGE     the base image (default: docker/Dockerfile's python:3.11.x-slim-bookworm;
#                    scripts/docker-offline.sh makes a stand-in where no registry answers)
#   BUILD_PIP_CONF   a pip.conf for the build (private index, proxy)  } BuildKit secrets: read
#   BUILD_CA_BUNDLE  a CA bundle for the build (TLS inspection)        } while pip runs, never
#                    (default: $PIP_CERT, the bundle your own pip uses)  in a layer or label
#   BUILD_NETWORK    e.g. host, when the engine's bridge has no way out (dockerd --iptables=false)
#   BAKE_WEIGHTS     1 (default): the GPU image holds the ImageNet weights; 0: an offline
#                    build, the weights then come from train.weights (a file or s3:// URI)
BAKE_WEIGHTS ?= 1
BUILD_PIP_CONF ?= $(PIP_CONFIG_FILE)
BUILD_CA_BUNDLE ?= $(PIP_CERT)
REVISION ?= $(shell git rev-parse --verify --quiet HEAD 2>/dev/null || echo unknown)
# The label names the source as a plain https URL: credentials, ssh forms and anything
# that is not https become https://host/path or nothing (a token must never be published).
SOURCE_REMOTE ?= $(shell git config --get remote.origin.url 2>/dev/null)
SOURCE_URL := $(shell printf '%s\n' '$(SOURCE_REMOTE)' | sed -E \
	-e 's|^[A-Za-z0-9._-]+@([A-Za-z0-9.-]+):([^/].*)$$|https://\1/\2|' \
	-e 's|^(ssh\|git)://([^@/]+@)?([A-Za-z0-9.-]+)(:[0-9]+)?/|https://\3/|' \
	-e 's|^https://[^@/]*@|https://|' -e 's|\.git/?$$||' \
	| grep -E '^https://[A-Za-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9._~/-]+$$' || true)
# The constraints are resolved for Linux x86-64 (and the CUDA wheels exist only there).
DOCKER_PLATFORM ?= linux/amd64
comma := ,
DOCKER_BUILD = DOCKER_BUILDKIT=1 $(DOCKER) build --file docker/Dockerfile --platform $(DOCKER_PLATFORM) \
	$(if $(PYTHON_IMAGE),--build-arg PYTHON_IMAGE=$(PYTHON_IMAGE)) \
	$(if $(BUILD_NETWORK),--network $(BUILD_NETWORK)) \
	$(if $(BUILD_PIP_CONF),--secret id=pip.conf$(comma)src=$(BUILD_PIP_CONF)) \
	$(if $(BUILD_CA_BUNDLE),--secret id=ca.pem$(comma)src=$(BUILD_CA_BUNDLE)) \
	--build-arg REVISION=$(REVISION) $(if $(SOURCE_URL),--build-arg SOURCE=$(SOURCE_URL))

.PHONY: chart image image-cpu image-gpu image-serve image-ref-cpu image-source-url image-test \
	image-test-gpu image-test-serve buildkit-check push push-check lock-images local-run-kind local-down

image: image-cpu image-gpu image-serve ## build the images: $REGISTRY/fauna-{cpu,gpu,serve}:<git sha> (BuildKit)

image-cpu: buildkit-check ## build the CPU image (data steps, evaluate, t-SNE, compare, publish, submit)
	$(DOCKER_BUILD) --target cpu --tag $(IMAGE_CPU) .

image-gpu: buildkit-check ## build the GPU image (training; TensorFlow with CUDA; not built in CI)
	$(DOCKER_BUILD) --target gpu --build-arg BAKE_WEIGHTS=$(BAKE_WEIGHTS) --tag $(IMAGE_GPU) .

image-serve: buildkit-check ## build the serving image (`fauna serve`, the chart's KServe InferenceService)
	$(DOCKER_BUILD) --target serve --tag $(IMAGE_SERVE) .

buildkit-check:
	@DOCKER=$(DOCKER) bash scripts/docker-buildkit-check.sh

# The checks need the image built twice: the second time with only a new revision, which
# must reuse every layer (tests/test_image.py compares the layer digests).
image-test: $(STAMP) image-cpu ## build the CPU image and run every step check inside it (tests/test_image.py)
	$(DOCKER_BUILD) --quiet --target cpu --build-arg REVISION=image-test-rebuild \
	  --tag $(IMAGE_CPU)-rebuild . >/dev/null
	FAUNA_IMAGE=$(IMAGE_CPU) FAUNA_IMAGE_REBUILT=$(IMAGE_CPU)-rebuild DOCKER=$(DOCKER) \
	  $(BIN)/python -m pytest -m docker -p no:cacheprovider tests/test_image.py $(PYTEST_ARGS); \
	  status=$$?; $(DOCKER) rmi $(IMAGE_CPU)-rebuild >/dev/null; exit $$status

# The GPU image (~7 GB; not in CI): TensorFlow imports, the CUDA libraries are there, and
# without a GPU training falls back to the CPU with one clear line (tests/test_image_gpu.py).
# BAKE_WEIGHTS=0 builds it offline; it runs here on any machine, with or without a GPU.
image-test-gpu: $(STAMP) image-gpu ## build the GPU image and check it (TensorFlow, CUDA libraries, CPU fallback)
	FAUNA_GPU_IMAGE=$(IMAGE_GPU) DOCKER=$(DOCKER) \
	  $(BIN)/python -m pytest -m docker -p no:cacheprovider tests/test_image_gpu.py $(PYTEST_ARGS)

# The serving image: `fauna serve` answers a V1 request from a model trained in it
# (tests/test_image_serve.py; a few minutes, most of them training; not in CI).
image-test-serve: $(STAMP) image-serve ## build the serving image and serve a model trained inside it
	FAUNA_SERVE_IMAGE=$(IMAGE_SERVE) DOCKER=$(DOCKER) \
	  $(BIN)/python -m pytest -m docker -p no:cacheprovider tests/test_image_serve.py $(PYTEST_ARGS)

image-ref-cpu:
	@echo $(IMAGE_CPU)

image-source-url:
	@echo $(SOURCE_URL)

push-check:
	@if [ "$(REGISTRY)" = localhost ]; then \
	  echo "push: set REGISTRY (in env.sh) to your registry, e.g. ghcr.io/your-org" >&2; exit 2; fi
	@case "$(TAG)" in *-dirty) if [ "$(ALLOW_DIRTY)" != 1 ]; then \
	  echo "push: $(TAG) is built from uncommitted files; commit first (or ALLOW_DIRTY=1)" >&2; \
	  exit 2; fi;; esac

push: push-check image ## push the three images to $REGISTRY (set it in env.sh); refuses -dirty tags
	$(DOCKER) push $(IMAGE_CPU)
	$(DOCKER) push $(IMAGE_GPU)
	$(DOCKER) push $(IMAGE_SERVE)
	@echo "pushed $(IMAGE_CPU), $(IMAGE_GPU) and $(IMAGE_SERVE); helm: --set image.registry=$(REGISTRY) --set image.tag=$(TAG)"
	@echo "or: make chart TAG=$(TAG), a chart whose default image tag is $(TAG)"

chart: ## package charts/fauna with appVersion = $TAG (its default image tag) into dist/ (needs helm)
	@case "$(TAG)" in *-dirty) echo "chart: $(TAG) is not a pushed tag; commit, make push" >&2; exit 2;; esac
	helm package charts/fauna --app-version $(TAG) --destination dist

lock-images: $(STAMP) ## re-pin every package of the images (docker/constraints-*.txt) after changing pyproject.toml
	$(BIN)/python docker/lock.py

local-run-kind: $(STAMP) ## the whole pipeline on kind + MinIO + KFP (needs docker, kind, kubectl, helm)
	REGISTRY=$(REGISTRY) TAG=$(TAG) FAUNA=$(abspath $(BIN))/fauna PYTHON=$(abspath $(BIN))/python \
	  bash scripts/kind-local-run.sh

local-down: ## delete the kind cluster of the kind route
	bash scripts/kind-local-down.sh
