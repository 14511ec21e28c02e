#!/usr/bin/env bash
# Quick start, second command: installs what is missing, builds, and runs every test — unit,
# integration (a real nats-server per test file) and lab (a real kernel under QEMU).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
npm run build
report=$(mktemp)
status=0
npx vitest run --reporter=default --reporter=json --outputFile="$report" "$@" || status=$?
node scripts/test-summary.mjs "$report" || status=$?
rm -f "$report"
exit "$status"
