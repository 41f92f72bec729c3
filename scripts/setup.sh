#!/usr/bin/env bash
# Installs the npm dependencies (Node 24 arrives as the `node` devDependency) when the lock file
# changed since the last install. Sourced by demo.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v npm >/dev/null 2>&1; then
  echo "kube-registrar needs Node.js with npm (any version from 18 on; npm installs Node 24 for the project). Install it from your distribution or https://nodejs.org and run again." >&2
  exit 1
fi
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
