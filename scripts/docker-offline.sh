#!/usr/bin/env bash
# A stand-in for the images' base when no container registry can be reached: Debian
# bookworm's own Python 3.11 (the version docker/constraints-*.txt were resolved for),
# built with debootstrap from the Debian mirror apt already uses, imported as a local
# image. A machine with a normal Docker never needs this: `make image-cpu` pulls
# python:3.11.x-slim-bookworm. Needs root and debootstrap; idempotent.
#
#   scripts/docker-offline.sh            # prints the image name to pass as PYTHON_IMAGE
#   make image-cpu PYTHON_IMAGE=$(scripts/docker-offline.sh)
set -euo pipefail

DOCKER=${DOCKER:-docker}
IMAGE=${OFFLINE_PYTHON_IMAGE:-local/python:3.11-bookworm}
SUITE=bookworm

log() { echo "docker-offline: $*" >&2; }

if "$DOCKER" image inspect "$IMAGE" >/dev/null 2>&1; then
  log "$IMAGE already exists"
  echo "$IMAGE"
  exit 0
fi

# The mirror apt uses (deb822 .sources or a classic sources.list), else Debian's default.
debian_mirror() {
  local found
  found=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null \
    | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  if [[ -z $found ]]; then
    found=$(grep -hsE '^deb\s' /etc/apt/sources.list 2>/dev/null \
      | awk '{print $2}' | grep -v -- '-security' | head -n1 || true)
  fi
  echo "${found:-http://deb.debian.org/debian}"
}

if ! command -v debootstrap >/dev/null 2>&1; then
  log "debootstrap is missing: apt-get install -y debootstrap (as root)"
  exit 2
fi

MIRROR=${DEBIAN_MIRROR:-$(debian_mirror)}
ROOTFS=$(mktemp -d "${TMPDIR:-/tmp}/fauna-rootfs.XXXXXX")
trap 'rm -rf "$ROOTFS"' EXIT

log "debootstrap $SUITE from $MIRROR (a minute or two)"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || {
  tail -n 20 "$ROOTFS.log" >&2
  exit 1
}
rm -f "$ROOTFS.log"

version=$(chroot "$ROOTFS" python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $version != 3.11 ]]; then
  log "Debian $SUITE has Python $version, the constraints are resolved for 3.11"
  exit 1
fi

# Like the official image: `python` on PATH, and a pip of its own in /usr/local (from
# Debian's bundled wheel, no network) that the runtime stage removes again.
ln -sf /usr/bin/python3 "$ROOTFS/usr/local/bin/python"
rm -f "$ROOTFS"/usr/lib/python3.*/EXTERNALLY-MANAGED
pip_wheel=$(find "$ROOTFS/usr/share/python-wheels" -name 'pip-*.whl' | head -n1)
chroot "$ROOTFS" python3 "/usr/share/python-wheels/${pip_wheel##*/}/pip" install --quiet \
  --no-index --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
  "/usr/share/python-wheels/${pip_wheel##*/}"
chroot "$ROOTFS" python -m pip --version >&2

# What a container never needs: apt's lists and caches, docs, man pages, locales.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/* "$ROOTFS"/usr/share/doc/* \
  "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/locale/* \
  "$ROOTFS"/var/log/* "$ROOTFS"/tmp/*

tar --numeric-owner -C "$ROOTFS" -c . | "$DOCKER" import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$IMAGE" >/dev/null
log "imported $IMAGE ($("$DOCKER" image inspect --format '{{.Size}}' "$IMAGE") bytes)"
echo "$IMAGE"
