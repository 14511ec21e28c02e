#!/bin/sh
# `trellis run` while its planner is stopped and started again (`trellis lab run --hosts 1`): the command
# pauses, then succeeds, and the container exists once. test/lab/failover.test.ts asserts on the output.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

# A planner of this script's own, beside the lab's, on the same NATS and IPAM: the script stops and starts
# it by its pid, and the commands below reach only it. The lab's planner has the metrics port.
export TRELLIS_PLANNER_ADDR=127.0.0.1:7720
PIDFILE=/tmp/lab/failover-planner.pid
start_planner() {
  trellis planner --listen="$TRELLIS_PLANNER_ADDR" --ipam=127.0.0.1:7711 --metrics=off >>/tmp/lab/failover-planner.log 2>&1 &
  echo $! > "$PIDFILE"
  wait_until trellis network ls
}
stop_planner() {
  kill "$(cat "$PIDFILE")"
  while kill -0 "$(cat "$PIDFILE")" 2>/dev/null; do sleep 0.2; done
}

start_planner
section create
show trellis network create --subnet=10.50.0.0/24 -o parent=eth0 fonet
NET=$(trellis network inspect fonet | grep '"id"' | head -1 | sed 's/.*"id": "\([^"]*\)".*/\1/')

stop_planner
section run-during-restart
# Started again 5 s into the command's retries.
( sleep 5; start_planner ) &
RESTARTER=$!
START=$(date +%s)
show trellis run --timeout=120 --net=fonet --name=c1 --host=h1
echo "took $(( $(date +%s) - START )) s"
wait "$RESTARTER"

section ps
show trellis ps --net=fonet
section exec-c1
show trellis exec c1 ip -4 -o addr show eth0
section ipam-holders
show node lab/ipam-holders.mjs "$NET"

section rm-c1
show trellis rm c1
stop_planner
