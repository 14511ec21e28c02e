#!/bin/sh
# Routers learn container subnets over BGP (`trellis lab run --hosts 2 --routers 1`): h1's and h2's agents
# peer with r1, a plain BIRD (no Trellis) whose hold time is 6 s; the client sits behind r1 on 192.168.2.0/24.
# Every step prints what it does, then what it saw; test/lab/bgp.test.ts asserts on it.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

R1_CTL=/tmp/lab/bird/r1.ctl

# r1 has a BGP route (in its kernel, put there by its BIRD) covering the address, via the next hop.
r1_routes() {
  ip -n r1 route show proto bird match "$1"
  ip -n r1 -6 route show proto bird match "$1"
}

r1_has() {
  r1_routes "$1" | grep -q " via $2 "
}

r1_lacks() {
  ! r1_routes "$1" | grep -q .
}

r1_table() {
  ip -n r1 route show table all
}

# What r1's BIRD says about its sessions: name, state and since when, per host and family.
r1_sessions() {
  birdc -s "$R1_CTL" show protocols | awk '$2 == "BGP" {print $1, $4, $5, $6}'
}

h2_bird_pid() {
  cat /run/trellis/bird/h2/bird.pid
}

say "An L3 dual-stack network on eth0 of every host; a container on h1 and one on h2."
section create-l3net
show trellis network create -d ipvlan -o ipvlan_mode=l3 --subnet=10.1.0.0/16 --subnet=fd00:30::/64 -o parent=eth0 l3net
NET=$(trellis network inspect l3net | grep '"id"' | head -1 | sed 's/.*"id": "\([^"]*\)".*/\1/')
section run-c1
show trellis run --net=l3net --name=c1 --host=h1
section run-c2
show trellis run --net=l3net --name=c2 --host=h2
C1=$(addr_of c1)
C2=$(addr_of c2)
D1=$(addr6_of c1)
D2=$(addr6_of c2)
echo "c1=$C1 $D1 c2=$C2 $D2"

say "r1 learns each host's blocks over BGP, IPv4 via the host's IPv4 address and IPv6 via its IPv6 one."
started=$(date +%s)
WAIT_SECONDS=90 wait_until r1_has "$C1" 192.168.1.11
WAIT_SECONDS=90 wait_until r1_has "$C2" 192.168.1.12
WAIT_SECONDS=90 wait_until r1_has "$D1" fd00:1::11
WAIT_SECONDS=90 wait_until r1_has "$D2" fd00:1::12
section r1-learned
echo "learned within $(( $(date +%s) - started )) s of the containers' start"
section r1-routes
ip -n r1 route show proto bird
ip -n r1 -6 route show proto bird
section r1-sessions
r1_sessions
section h2-bird-config
grep -E "route |neighbor|local" /run/trellis/bird/h2/bird.conf

say "The client behind r1 pings the containers on both hosts, over IPv4 and IPv6: its only way there is r1."
section client-routes
ip -n client route
ip -n client -6 route | grep -v "^fe80"
section ping-client-c1
show trellis host exec client ping -c 2 -W 2 "$C1"
section ping-client-c2
show trellis host exec client ping -c 2 -W 2 "$C2"
section ping6-client-c1
show trellis host exec client ping -6 -c 2 -W 2 "$D1"
section ping6-client-c2
show trellis host exec client ping -6 -c 2 -W 2 "$D2"

say "A forged announcement in the routes bucket: h2 claims c1's address and the whole subnet. r1 learns nothing of it."
r1_table > /tmp/before-forge
section forge
show node lab/forge-announcement.mjs h2 192.168.1.12 "$NET" "$C1/32" 10.1.0.0/16
sleep 5
r1_table > /tmp/after-forge
section forge-diff
show diff /tmp/before-forge /tmp/after-forge
section forge-h2-bird
grep -c "route 10.1.0.0/16\|route $C1/32" /run/trellis/bird/h2/bird.conf

say "Restarting h2's agent changes nothing at r1: its BIRD, its sessions and its routes stay."
r1_table > /tmp/before-restart
r1_sessions > /tmp/sessions-before-restart
pid_before=$(h2_bird_pid)
trellis lab agent stop h2
trellis lab agent start h2
# A pass of the restarted agent (it runs one before it says ready, and another on its resync timer).
sleep 16
r1_table > /tmp/after-restart
r1_sessions > /tmp/sessions-after-restart
section restart-diff
show diff /tmp/before-restart /tmp/after-restart
# BIRD prints when each session came up from its monotonic clock, so the same time may differ by a millisecond.
section restart-sessions
echo "before:"
cat /tmp/sessions-before-restart
echo "after:"
cat /tmp/sessions-after-restart
section restart-bird-pid
[ "$pid_before" = "$(h2_bird_pid)" ] && echo "same BIRD (pid $pid_before)" || echo "BIRD changed: $pid_before -> $(h2_bird_pid)"

say "Removing c1, the last container of h1's blocks, withdraws them at r1; h2's stay."
section rm-c1
show trellis rm c1
WAIT_SECONDS=60 wait_until r1_lacks "$C1"
WAIT_SECONDS=60 wait_until r1_lacks "$D1"
section after-rm-c1
ip -n r1 route show proto bird
ip -n r1 -6 route show proto bird

say "h2's BIRD stops answering, as a dead host's would (SIGSTOP: no keepalives, no connection closed): r1 withdraws h2's blocks when its hold time (6 s) runs out."
pid=$(h2_bird_pid)
stopped_at=$(date +%s.%N)
kill -STOP "$pid"
stopped=$(date +%s)
WAIT_SECONDS=60 wait_until r1_lacks "$C2"
WAIT_SECONDS=60 wait_until r1_lacks "$D2"
section h2-dead
echo "withdrawn after $(( $(date +%s) - stopped )) s"
# When r1's hold timer ran out, from its log (the withdrawal is the same event): exact, however slow the looks above.
expired=$(grep "h2_v4: Error: Hold timer expired" /tmp/lab/bird/r1.log | tail -1 | cut -d" " -f1,2)
echo "r1's hold timer for h2_v4 expired $(awk -v at="$(date -d "$expired" +%s.%N)" -v stop="$stopped_at" 'BEGIN { printf "%.1f", at - stop }') s after the stop"
ip -n r1 route show proto bird
ip -n r1 -6 route show proto bird
section ping-client-c2-while-dead
show trellis host exec client ping -c 1 -W 1 "$C2"
kill -KILL "$pid"

say "h2's agent finds its BIRD gone on its next pass (every 15 s) and starts a new one: r1 learns h2's blocks again."
killed=$(date +%s)
WAIT_SECONDS=90 wait_until r1_has "$C2" 192.168.1.12
WAIT_SECONDS=90 wait_until r1_has "$D2" fd00:1::12
section h2-back
echo "back after $(( $(date +%s) - killed )) s"
ip -n r1 route show proto bird
ip -n r1 -6 route show proto bird
section ping-client-c2-after-back
show trellis host exec client ping -c 2 -W 2 "$C2"
