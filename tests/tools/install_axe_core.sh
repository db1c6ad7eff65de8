#!/usr/bin/env bash
# Install axe-core (the accessibility checker run in Chromium by tests/test_html_report.py) from
# npm, at a pinned version, under ~/.cache/pytest-evalrun-tools/axe-core (or $1).
# Idempotent: does nothing when that version is already there. Needs node/npm and the registry.
set -euo pipefail
AXE_VERSION="4.14.1"
PREFIX="${1:-${HOME}/.cache/pytest-evalrun-tools/axe-core}"
JS="${PREFIX}/node_modules/axe-core/axe.min.js"
if [ -f "${JS}" ] && grep -q "\"version\": \"${AXE_VERSION}\"" "${PREFIX}/node_modules/axe-core/package.json"; then
  echo "axe-core ${AXE_VERSION}: ${JS} (already installed)"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  echo "install_axe_core.sh: npm is not installed (apt-get install npm)" >&2
  exit 1
fi
mkdir -p "${PREFIX}"
npm install --prefix "${PREFIX}" --no-audit --no-fund --save-exact "axe-core@${AXE_VERSION}"
echo "axe-core ${AXE_VERSION}: ${JS}"
