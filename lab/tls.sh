#!/bin/sh
# The lab with TLS on (`trellis lab run --tls`): every gRPC and NATS connection with mutual TLS, each service and
# agent with its own certificate from the lab's CA, this script's `trellis` an operator's. Two hosts, one L3
# network, so that pings across hosts need route distribution, whose heartbeats and announcements are signed.
# test/lab/tls.test.ts asserts on what each labelled step prints.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."
TLS_DIR=$(dirname "$TRELLIS_TLS_CA")

has_route() {
  ip -n "$1" route show proto 210 match "$2" | grep -q " via $3 "
}

section create-l3net
show trellis network create -d ipvlan -o ipvlan_mode=l3 --subnet=10.1.0.0/16 -o parent=eth0 l3net
NET=$(trellis network inspect l3net | grep '"id"' | head -1 | sed 's/.*"id": "\([^"]*\)".*/\1/')
for i in 1 2; do
  section "run-c$i"
  show trellis run --net=l3net --name="c$i" --host="h$i"
done
C2=$(addr_of c2)
WAIT_SECONDS=30 wait_until has_route h1 "$C2" 192.168.1.12
section routes-h1
ip -n h1 route show proto 210
section ping-c1-c2
show trellis exec c1 ping -c 2 -W 2 "$C2"

section no-certificate
show env TRELLIS_TLS_CERT= TRELLIS_TLS_KEY= trellis network create --subnet=10.9.0.0/24 anon
section networks-after
trellis network ls

# h1's agent key and NATS login, as a compromised h1 would use them: an unsigned announcement for h2.
section forge
TRELLIS_TLS_CERT="$TLS_DIR/h1.crt" TRELLIS_TLS_KEY="$TLS_DIR/h1.key" node lab/forge-announcement.mjs h2 192.168.1.11 "$NET" 10.1.0.0/16
sleep 2
section forge-dropped
grep -h "dropped the route announcement of host h2" /tmp/lab/logs/agent-h1.log | sort -u
section forge-routes-h1
ip -n h1 route show proto 210
# h2's agent writes its own announcement again at its next pass (every 15 s at most).
WAIT_SECONDS=30 wait_until has_route h1 "$C2" 192.168.1.12
section routes-h1-after
ip -n h1 route show proto 210
