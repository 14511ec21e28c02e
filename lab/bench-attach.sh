#!/bin/sh
# `npm run bench:attach`: bench/attach.ts in the lab (`trellis lab run --hosts 1`), where ipvlan exists.
set -u
cd "$(dirname "$0")/.."
exec node dist/bundle/bench-attach.js "$@"
