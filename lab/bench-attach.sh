#!/bin/sh
# `npm run bench:attach`: bench/attach.ts in the lab (`trellis lab run --hosts 1`), where ipvlan exists.
set -u
cd "$(dirname "$0")/.."
. lab/lib.sh
# The trellis CNI plugin asks h1's agent, whose local API calls a planner it can see from h1's namespace: a replica
# on the underlay (services/lab/config.ts AGENT_PLANNER_ADDR), on the lab's NATS and IPAM, its metrics off.
trellis planner --listen=192.168.1.254:7720 --ipam=127.0.0.1:7711 --metrics=off >>/tmp/lab/bench-planner.log 2>&1 &
TRELLIS_PLANNER_ADDR=192.168.1.254:7720 wait_until trellis network ls
exec node dist/bundle/bench-attach.js "$@"
