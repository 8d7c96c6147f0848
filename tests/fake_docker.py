"""A docker CLI stand-in for the checks that ask about Docker (the image targets' BuildKit
check, local-run's choice of route): the engine version, the CLI version and whether the
buildx plugin answers come from the environment (SERVER, CLIENT, BUILDX). Any other docker
command fails loudly (exit 3): a check must not run one.
"""

from __future__ import annotations

from pathlib import Path

FAKE_DOCKER = """#!/bin/sh
case "$*" in
  "version --format {{.Server.Version}}") [ -n "$SERVER" ] && echo "$SERVER" || exit 1 ;;
  "version --format {{.Client.Version}}") echo "$CLIENT" ;;
  "buildx version") [ -n "$BUILDX" ] || exit 1; echo "github.com/docker/buildx v0.20.0" ;;
  *) echo "docker $* must not run while checking for Docker" >&2; exit 3 ;;
esac
"""


def install_fake_docker(path: Path) -> Path:
    """The stand-in written at `path`, executable."""
    path.write_text(FAKE_DOCKER)
    path.chmod(0o755)
    return path
