#!/usr/bin/env bash
# Runs every test from a fresh clone: installs dependencies, provisions the test bed's servers
# (built once, then cached), type-checks, lints, and runs the unit and integration tests.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec npm test
