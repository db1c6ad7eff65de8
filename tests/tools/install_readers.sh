#!/usr/bin/env bash
# Install the real readers the tests check our outputs with (docs/development.md):
#   promtool     (Debian's `prometheus` package)   tests/test_openmetrics.py
#   xunit-viewer (npm, pinned)                      tests/test_junit_reader.py
# npm packages go under ${EVALRUN_TOOLS:-~/.cache/pytest-evalrun-tools}/<name>, where the tests
# look first. Idempotent. Needs root (or sudo) and apt for promtool, node and npm for the rest.
set -euo pipefail
TOOLS="${EVALRUN_TOOLS:-$HOME/.cache/pytest-evalrun-tools}"
SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

if ! command -v promtool >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  # --no-install-recommends: only the binaries; a policy-rc.d keeps its service from starting
  $SUDO apt-get install -y -q --no-install-recommends prometheus
fi
echo "promtool: $(command -v promtool)"

npm_tool() {  # npm_tool DIR PACKAGE@VERSION
  local dir="$TOOLS/$1" spec="$2"
  if [ -f "$dir/.installed" ] && [ "$(cat "$dir/.installed")" = "$spec" ]; then
    echo "$spec: $dir (already installed)"
    return 0
  fi
  mkdir -p "$dir"
  npm install --silent --no-audit --no-fund --prefix "$dir" "$spec"
  echo "$spec" > "$dir/.installed"
  echo "$spec: $dir"
}
npm_tool xunit-viewer xunit-viewer@10.6.1
