#!/bin/sh
# The dataplane outlives the control plane (`trellis lab run --hosts 2`): containers of an L3 and of an L2
# network on h1 and h2 ping each other while the lab's nats-server is frozen for 20 s (SIGSTOP, longer than the
# 10 s heartbeat window), then killed and started again on the same store. test/lab/nats-outage.test.ts asserts
# on the output: no ping lost, no route changed on any host, every container still there, a new one works.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

PINGS=225 # 45 s at 0.2 s: the freeze, the restart and a whole heartbeat window after it

has_route() {
  ip -n "$1" route show proto 210 match "$2" | grep -q " via $3 "
}

tables() {
  for host in h1 h2; do
    echo "## $host"
    ip -n "$host" route show table all
  done
}

say "An L3 network and an L2 network (VLAN 20), each with a container on h1 and one on h2."
section create
show trellis network create -d ipvlan -o ipvlan_mode=l3 --subnet=10.1.0.0/16 -o parent=eth0 l3net
show trellis network create -d ipvlan --subnet=192.168.20.0/24 -o parent=eth0.20 l2net
for c in c1:l3net:h1 c2:l3net:h2 v1:l2net:h1 v2:l2net:h2; do
  name=${c%%:*} rest=${c#*:}
  section "run-$name"
  show trellis run --net="${rest%%:*}" --name="$name" --host="${rest#*:}"
done
C2=$(addr_of c2)
V2=$(addr_of v2)
WAIT_SECONDS=20 wait_until has_route h1 "$C2" 192.168.1.12

say "c1 pings c2 (L3) and v1 pings v2 (L2), five times a second, while NATS is frozen, killed and started again."
tables > /tmp/tables-before
for host in h1 h2; do
  ip -n "$host" monitor route > "/tmp/monitor-$host" 2>&1 &
  echo $! >> /tmp/monitors
done
ip netns exec c1@h1 ping -c "$PINGS" -i 0.2 -W 2 "$C2" > /tmp/ping-l3 2>&1 &
PING_L3=$!
ip netns exec v1@h1 ping -c "$PINGS" -i 0.2 -W 2 "$V2" > /tmp/ping-l2 2>&1 &
PING_L2=$!
sleep 3

NATS_PID=$(pidof nats-server)
NATS_ARGS=$(tr '\0' ' ' < "/proc/$NATS_PID/cmdline")
section freeze
kill -STOP "$NATS_PID"
echo "nats-server $NATS_PID frozen"
sleep 20
kill -KILL "$NATS_PID"
echo "nats-server $NATS_PID killed after 20 s"
# Started again as the lab started it: same address, same JetStream store.
# shellcheck disable=SC2086 # the recorded argv, split again
$NATS_ARGS >> /tmp/lab/logs/nats-restarted.log 2>&1 &
echo "nats-server started again"
WAIT_SECONDS=30 wait_until trellis network ls
echo "the planner answers again"

wait "$PING_L3"
wait "$PING_L2"
kill $(cat /tmp/monitors)
section ping-l3
tail -n 3 /tmp/ping-l3
section ping-l2
tail -n 3 /tmp/ping-l2
tables > /tmp/tables-after
section tables-diff
show diff /tmp/tables-before /tmp/tables-after
for host in h1 h2; do
  section "route-changes-$host"
  cat "/tmp/monitor-$host"
done
section agents-on-contact
for host in h1 h2; do
  log=/tmp/lab/logs/agent-$host.log
  echo "$host lost $(grep -c 'lost contact with NATS' "$log") back $(grep -c 'contact with NATS is back' "$log")"
done
section withdrawals
grep -h "has not heartbeaten" /tmp/lab/logs/agent-h1.log /tmp/lab/logs/agent-h2.log

say "Every container is still listed, and a new one on h2 is reached from h1."
section ps
trellis ps
section run-c3
show trellis run --net=l3net --name=c3 --host=h2
C3=$(addr_of c3)
WAIT_SECONDS=20 wait_until has_route h1 "$C3" 192.168.1.12
section ping-c3
show trellis exec c1 ping -c 2 -W 2 "$C3"
