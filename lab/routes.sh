#!/bin/sh
# L3 route distribution across hosts h1..h3 and the upstream u1 (`trellis lab run --hosts 3 --upstreams 1`).
# Every step prints what it does, then what it saw; test/lab/routes.test.ts asserts on it.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

# Hosts announce their IPAM blocks (a /26 by default), so look for a Trellis route that covers the address.
has_route() {
  ip -n "$1" route show proto 210 match "$2" | grep -q " via $3 "
}

has_route6() {
  ip -n "$1" -6 route show proto 210 match "$2" | grep -q " via $3 "
}

no_route() {
  ! ip -n "$1" route show proto 210 match "$2" | grep -q .
}

# Every routing table but the one of the host named, for byte-for-byte comparisons.
tables_except() {
  for host in h1 h2 h3 u1; do
    [ "$host" = "$1" ] && continue
    echo "## $host"
    ip -n "$host" route show table all
  done
}

seconds_since() {
  echo $(( $(date +%s) - $1 ))
}

say "An L3 network on eth0 of every host; one container on each of h1, h2 and h3."
section create-l3net
show trellis network create -d ipvlan -o ipvlan_mode=l3 --subnet=10.1.0.0/16 -o parent=eth0 l3net
NET=$(trellis network inspect l3net | grep '"id"' | head -1 | sed 's/.*"id": "\([^"]*\)".*/\1/')
for i in 1 2 3; do
  section "run-c$i"
  show trellis run --net=l3net --name="c$i" --host="h$i"
done
C1=$(addr_of c1)
C2=$(addr_of c2)
C3=$(addr_of c3)
echo "c1=$C1 c2=$C2 c3=$C3"

say "Each host announces the block its container's address lies in; the others and the upstream install it, via the host."
WAIT_SECONDS=20 wait_until has_route h2 "$C1" 192.168.1.11
WAIT_SECONDS=20 wait_until has_route u1 "$C3" 192.168.1.13
for host in h1 h2 h3 u1; do
  section "routes-$host"
  ip -n "$host" route show proto 210
done

say "Containers on different hosts ping each other, and the upstream pings every container."
section ping-c1-c2
show trellis exec c1 ping -c 2 -W 2 "$C2"
section ping-c2-c3
show trellis exec c2 ping -c 2 -W 2 "$C3"
section ping-c3-c1
show trellis exec c3 ping -c 2 -W 2 "$C1"
for c in c1 c2 c3; do
  section "ping-u1-$c"
  show trellis host exec u1 ping -c 2 -W 2 "$(addr_of $c)"
done

say "A dual-stack L3 network: IPv6 prefixes are announced with each host's IPv6 underlay address as next hop."
section create-l3v6
show trellis network create -d ipvlan -o ipvlan_mode=l3 --subnet=10.2.0.0/16 --subnet=fd00:30::/64 -o parent=eth0 l3v6
for i in 1 2; do
  section "run-d$i"
  show trellis run --net=l3v6 --name="d$i" --host="h$i"
done
D1=$(addr6_of d1)
D2=$(addr6_of d2)
echo "d1=$D1 d2=$D2"
WAIT_SECONDS=20 wait_until has_route6 h2 "$D1" fd00:1::11
WAIT_SECONDS=20 wait_until has_route6 u1 "$D2" fd00:1::12
for host in h1 u1; do
  section "routes6-$host"
  ip -n "$host" -6 route show proto 210
done
section ping6-d1-d2
show trellis exec d1 ping -6 -c 2 -W 2 "$D2"
section ping6-u1-d1
show trellis host exec u1 ping -6 -c 2 -W 2 "$D1"

say "A forged announcement: h2 adds c1's and c3's addresses and the whole subnet to what it announces. Nothing changes."
tables_except h2 > /tmp/before-forge
section forge
show node lab/forge-announcement.mjs h2 192.168.1.12 "$NET" "$C1/32" "$C3/32" 10.1.0.0/16
sleep 3
tables_except h2 > /tmp/after-forge
section forge-diff
show diff /tmp/before-forge /tmp/after-forge
section forge-refused
grep -h "refused announcement" /tmp/lab/logs/agent-h3.log /tmp/lab/logs/agent-u1.log | sort -u

say "Restarting h3's agent leaves every other host's routing table byte-for-byte the same."
tables_except h3 > /tmp/before-restart
started=$(date +%s)
trellis lab agent stop h3
trellis lab agent start h3
section restart-h3
echo "restart took $(seconds_since "$started") s"
tables_except h3 > /tmp/after-restart
section restart-diff
show diff /tmp/before-restart /tmp/after-restart

say "h2's agent stops: within the heartbeat window (10 s) nobody routes to h2's container any more."
trellis lab agent stop h2
stopped=$(date +%s)
WAIT_SECONDS=30 wait_until no_route h1 "$C2"
WAIT_SECONDS=30 wait_until no_route h3 "$C2"
WAIT_SECONDS=30 wait_until no_route u1 "$C2"
section h2-silent
echo "withdrawn after $(seconds_since "$stopped") s"
ip -n h1 route show proto 210
section ping-c1-c2-while-h2-silent
show trellis exec c1 ping -c 1 -W 1 "$C2"

say "h2's agent starts again: its routes come back."
trellis lab agent start h2
WAIT_SECONDS=20 wait_until has_route h1 "$C2" 192.168.1.12
WAIT_SECONDS=20 wait_until has_route u1 "$C2" 192.168.1.12
section h2-back
ip -n h1 route show proto 210
section ping-c1-c2-after-h2-back
show trellis exec c1 ping -c 2 -W 2 "$C2"

say "Removing the last container of h1 withdraws its route everywhere."
section rm-c1
show trellis rm c1
WAIT_SECONDS=20 wait_until no_route h2 "$C1"
WAIT_SECONDS=20 wait_until no_route u1 "$C1"
section after-rm-c1
for host in h2 h3 u1; do
  echo "## $host"
  ip -n "$host" route show proto 210
done
