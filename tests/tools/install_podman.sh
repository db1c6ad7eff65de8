#!/usr/bin/env bash
# Install podman (Debian's package, with runc) and build the local base image the container
# tests and bench/bench_podman.py use, for tests/test_podman*.py and tests/test_harbor_tasks*.py.
#
# Idempotent: installs nothing when podman, runc and debootstrap are there, keeps an existing
# /etc/containers/containers.conf that already names runc, and builds the base image only when
# `podman image exists` says it is missing. Needs root (or sudo) and apt.
#
# No container registry is reachable from CI, so the base image is made locally:
# `debootstrap --variant=minbase` of the distribution the apt sources name (bookworm), from the
# same mirror, imported with `podman import` as $EVALRUN_BASE_IMAGE
# (default localhost/evalrun-debian:bookworm). Images built on top of it may run apt-get.
#
# Why containers.conf: crun fails on hybrid (v1) cgroups, runc works; podman's default
# ulimits (nofile 1048576) exceed the hard limits of some CI machines.
set -euo pipefail
IMAGE="${EVALRUN_BASE_IMAGE:-localhost/evalrun-debian:bookworm}"
SUITE="${EVALRUN_BASE_SUITE:-bookworm}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_podman.sh: not root and no sudo: cannot install podman" >&2
    exit 1
  fi
fi

if ! command -v podman >/dev/null 2>&1 || ! command -v runc >/dev/null 2>&1 \
    || ! command -v debootstrap >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_podman.sh: no apt-get: install podman, runc and debootstrap with this" \
         "system's package manager" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q podman runc debootstrap
fi
podman --version

CONF=/etc/containers/containers.conf
if ! grep -qs '^runtime *= *"runc"' "$CONF"; then
  if [ -s "$CONF" ]; then
    echo "install_podman.sh: $CONF exists and does not set runtime = \"runc\"; leaving it" >&2
  else
    $SUDO mkdir -p /etc/containers
    printf '%s\n' '[containers]' 'default_ulimits = ["nofile=1024:1024", "nproc=1000:1000"]' \
      '' '[engine]' 'runtime = "runc"' | $SUDO tee "$CONF" >/dev/null
    echo "wrote $CONF (runtime runc, default ulimits within the hard limits)"
  fi
fi

if $SUDO podman image exists "$IMAGE"; then
  echo "$IMAGE: already built"
  exit 0
fi
# The apt mirror: the first URIs of the deb822 sources (or of sources.list), else Debian's.
MIRROR="$(grep -hsm1 '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true)"
if [ -z "$MIRROR" ]; then
  MIRROR="$(grep -hsm1 '^deb ' /etc/apt/sources.list | awk '{print $2}' || true)"
fi
MIRROR="${MIRROR:-http://deb.debian.org/debian}"
ROOT="$(mktemp -d /var/tmp/evalrun-debootstrap.XXXXXX)"
trap '$SUDO rm -rf "$ROOT"' EXIT
echo "building $IMAGE: debootstrap --variant=minbase $SUITE from $MIRROR"
if ! $SUDO debootstrap --variant=minbase "$SUITE" "$ROOT/root" "$MIRROR" >"$ROOT/log" 2>&1; then
  tail -20 "$ROOT/log" >&2
  echo "install_podman.sh: debootstrap failed" >&2
  exit 1
fi
$SUDO rm -rf "$ROOT/root/var/cache/apt/archives"/*.deb "$ROOT/root/var/lib/apt/lists"/*
$SUDO tar -C "$ROOT/root" -c . | $SUDO podman import \
  --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$IMAGE" >/dev/null
echo "$IMAGE: built"
