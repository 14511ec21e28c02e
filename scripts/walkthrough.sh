#!/usr/bin/env bash
# Quick start, first command: installs what is missing, builds, and runs the lab walkthrough
# (lab/walkthrough.sh) in a kernel that has ipvlan, 802.1Q and dummy, printing each step.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
npm run build
exec node dist/bundle/trellis.js lab run --hosts 2 --upstreams 1 "$PWD/lab/walkthrough.sh"
