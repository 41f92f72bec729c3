#!/usr/bin/env bash
# Runs kube-registrar on an embedded default: starts the local test bed (kube-apiserver, etcd,
# Consul), installs the CRDs and sample resources, and runs the operator against them.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec npm run demo
