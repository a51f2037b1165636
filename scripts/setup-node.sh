#!/usr/bin/env bash
# Installs the npm packages the tests use (Azurite, the Azure Blob emulator; axe-core), from package-lock.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x node_modules/.bin/azurite-blob ] || [ package-lock.json -nt node_modules/.stamp ]; then
  npm ci --no-audit --no-fund --loglevel=error
  touch node_modules/.stamp
fi
