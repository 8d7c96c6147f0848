#!/usr/bin/env bash
# Can `DOCKER_BUILDKIT=1 $DOCKER build` build docker/Dockerfile here? The images need
# BuildKit: the classic builder builds every stage before --target (the GPU one with
# ~7 GB of CUDA wheels too) and cannot mount the pip/CA build secrets. Silent when fine;
# one line saying what to install or set otherwise (exit 2). Called by `make image-*`.
set -euo pipefail

DOCKER=${DOCKER:-docker}

fail() {
  echo "image: $*" >&2
  exit 2
}

command -v "$DOCKER" >/dev/null 2>&1 || fail "no Docker CLI ($DOCKER) on PATH"
server=$("$DOCKER" version --format '{{.Server.Version}}' 2>/dev/null) \
  || fail "no Docker engine answers \`$DOCKER version\` (start dockerd, or check DOCKER_HOST)"
client=$("$DOCKER" version --format '{{.Client.Version}}' 2>/dev/null)

# BuildKit runs in the engine since 18.09.
if [[ ${server%%.*} =~ ^[0-9]+$ ]] && ((${server%%.*} < 18)); then
  fail "the Docker engine $server has no BuildKit (needs 18.09 or newer)"
fi
# A CLI with the buildx plugin always can. Without it, CLIs from 23.0 on refuse
# DOCKER_BUILDKIT=1, while older ones (e.g. Debian's docker.io 20.10) build with BuildKit.
if "$DOCKER" buildx version >/dev/null 2>&1; then
  exit 0
fi
major=${client%%.*}
if [[ $major =~ ^[0-9]+$ ]] && ((major >= 23)); then
  fail "BuildKit is required, and this Docker CLI ($client, $(command -v "$DOCKER")) needs the" \
    "buildx plugin for it: install docker-buildx-plugin (or docker-buildx), or use a" \
    "20.10-22 CLI, e.g. make image-cpu DOCKER=/usr/bin/docker with Debian's docker.io"
fi
