#!/usr/bin/env bash
# Install Docker's engine (Debian's docker.io), start its daemon when none answers, and load
# the local base image into it, for the Docker runs of tests/test_podman*.py (the `engine`
# fixture). Run after tests/tools/install_podman.sh: the base image is copied from podman
# (`podman save | docker load`), as no registry is reachable.
#
# Idempotent: installs nothing when dockerd is there, starts nothing when `docker info`
# answers, loads nothing when the image is there. Needs root (or sudo) and apt. The daemon
# started here logs to ${EVALRUN_DOCKERD_LOG:-/tmp/evalrun-dockerd.log} and keeps running.
set -euo pipefail
IMAGE="${EVALRUN_BASE_IMAGE:-localhost/evalrun-debian:bookworm}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_docker.sh: not root and no sudo: cannot install Docker" >&2
    exit 1
  fi
fi

if ! command -v dockerd >/dev/null 2>&1 && [ ! -x /usr/sbin/dockerd ]; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_docker.sh: no apt-get: install Docker's engine with this system's" \
         "package manager" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q docker.io
fi

if ! $SUDO docker info >/dev/null 2>&1; then
  DOCKERD="$(command -v dockerd || echo /usr/sbin/dockerd)"
  LOG="${EVALRUN_DOCKERD_LOG:-/tmp/evalrun-dockerd.log}"
  # no init system runs services on CI machines: start the daemon ourselves, detached
  $SUDO setsid "$DOCKERD" >"$LOG" 2>&1 < /dev/null &
  for _ in $(seq 1 120); do
    if $SUDO docker info >/dev/null 2>&1; then break; fi
    sleep 0.5
  done
  if ! $SUDO docker info >/dev/null 2>&1; then
    echo "install_docker.sh: dockerd did not answer within 60 s; its log ($LOG):" >&2
    tail -20 "$LOG" >&2
    exit 1
  fi
  echo "started dockerd (log: $LOG)"
fi
docker version --format 'docker client {{.Client.Version}}, engine {{.Server.Version}}'

if $SUDO docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "$IMAGE: already in Docker"
  exit 0
fi
if ! $SUDO podman image exists "$IMAGE"; then
  echo "install_docker.sh: $IMAGE is not in podman either: run tests/tools/install_podman.sh" \
       "first" >&2
  exit 1
fi
$SUDO podman save "$IMAGE" | $SUDO docker load
echo "$IMAGE: loaded into Docker"
