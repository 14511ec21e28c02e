#!/bin/sh
# A host reaching its own containers through a host shim (-o host_shim=true), in L2 and L3 mode, and failing
# to without one, as the reference says (`trellis lab run --hosts 2`). Every step prints what it does, then
# what it saw; test/lab/host-shim.test.ts asserts on it.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

network_id() {
  trellis network inspect "$1" | grep '"id"' | head -1 | sed 's/.*"id": "\([^"]*\)".*/\1/'
}

# The shim's interface name on a host: tsh and the network id's first 12 hex digits (services/link-agent/host-shim.ts).
shim_of() {
  echo "tsh$(network_id "$1" | cut -c1-12)"
}

shim_addr() {
  ip -n "$1" -4 -o addr show dev "$2" | awk '{print $4}' | cut -d/ -f1
}

ifindex_of() {
  ip netns exec "$1" cat "/sys/class/net/$2/ifindex"
}

has_shim_route() {
  ip -n "$1" route show dev "$2" proto 211 | grep -q "^$3 "
}

say "Two L2 networks on VLAN 30 of every host: shimnet2 with host_shim=true, plain2 without."
section create-l2
show trellis network create -o parent=eth0.30 --subnet=10.30.0.0/24 -o host_shim=true shimnet2
show trellis network create -o parent=eth0.30 --subnet=10.31.0.0/24 plain2
section run-l2
show trellis run --net=shimnet2 --name=a1 --host=h1
show trellis run --net=shimnet2 --name=a2 --host=h2
show trellis run --net=plain2 --name=p1 --host=h1
A1=$(addr_of a1)
P1=$(addr_of p1)
L2SHIM=$(shim_of shimnet2)
echo "a1=$A1 p1=$P1 shim=$L2SHIM"
WAIT_SECONDS=20 wait_until has_shim_route h1 "$L2SHIM" "$A1"

say "h1 has an ipvlan of its own on eth0.30, in l2 mode, with an address of shimnet2 and a route to a1 through it; plain2 has none."
section shim-h1-l2
ip -n h1 -d -o link show "$L2SHIM" | grep -o 'ipvlan *mode [a-z0-9]*'
ip -n h1 -o link show "$L2SHIM" | grep -o '@[^:]*'
ip -n h1 -4 -o addr show dev "$L2SHIM" | awk '{print $4}'
ip -n h1 route show dev "$L2SHIM"
section shim-h2-l2
ip -n h2 -4 -o addr show dev "$L2SHIM" | awk '{print $4}'
section links-h1-l2
ip -n h1 -o link show | grep -c '^[0-9]*: tsh'
section inspect-l2
trellis network inspect shimnet2
L2ADDR=$(shim_addr h1 "$L2SHIM")

say "h1 pings its own container on shimnet2, and a1 pings h1's shim address; plain2's container stays out of h1's reach."
section ping-h1-a1
show trellis host exec h1 ping -c1 -W2 "$A1"
section ping-a1-h1
show trellis exec a1 ping -c1 -W2 "$L2ADDR"
section ping-h1-p1
show trellis host exec h1 ping -c1 -W2 "$P1"
# Not for want of a route: through the parent itself, the kernel delivers nothing to its ipvlan slaves.
ip -n h1 route add 10.31.0.0/24 dev eth0.30
section ping-h1-p1-via-parent
show trellis host exec h1 ping -c1 -W2 "$P1"
ip -n h1 route del 10.31.0.0/24 dev eth0.30

say "The same in L3 mode on eth0: shimnet3 (dual-stack) with host_shim=true, plain3 without."
section create-l3
show trellis network create -o parent=eth0 -o ipvlan_mode=l3 --subnet=10.40.0.0/16 --subnet=fd00:40::/64 -o host_shim=true shimnet3
show trellis network create -o parent=eth0 -o ipvlan_mode=l3 --subnet=10.41.0.0/16 plain3
section run-l3
show trellis run --net=shimnet3 --name=b1 --host=h1
show trellis run --net=shimnet3 --name=b2 --host=h2
show trellis run --net=plain3 --name=q1 --host=h1
B1=$(addr_of b1)
Q1=$(addr_of q1)
L3SHIM=$(shim_of shimnet3)
echo "b1=$B1 q1=$Q1 shim=$L3SHIM"
WAIT_SECONDS=20 wait_until has_shim_route h1 "$L3SHIM" "$B1"
section shim-h1-l3
ip -n h1 -d -o link show "$L3SHIM" | grep -o 'ipvlan *mode [a-z0-9]*'
ip -n h1 -o addr show dev "$L3SHIM" scope global | awk '{print $4}'
ip -n h1 route show dev "$L3SHIM"
ip -n h1 -6 route show dev "$L3SHIM" proto 211
L3ADDR=$(shim_addr h1 "$L3SHIM")
L3ADDR6=$(ip -n h1 -6 -o addr show dev "$L3SHIM" scope global | awk '{print $4}' | cut -d/ -f1)
B1V6=$(addr6_of b1)
echo "b1v6=$B1V6 shim6=$L3ADDR6"
section announced-h2
# What h2 learnt from h1: blocks only, never the shim's address on its own.
ip -n h2 route show proto 210

say "h1 pings b1, and b1 pings h1's shim address; plain3's container stays out of h1's reach."
section ping-h1-b1
show trellis host exec h1 ping -c1 -W2 "$B1"
section ping-b1-h1
show trellis exec b1 ping -c1 -W2 "$L3ADDR"
section ping-h1-q1
show trellis host exec h1 ping -c1 -W2 "$Q1"
ip -n h1 route add 10.41.0.0/16 dev eth0
section ping-h1-q1-via-parent
show trellis host exec h1 ping -c1 -W2 "$Q1"
ip -n h1 route del 10.41.0.0/16 dev eth0
section ping6-h1-b1
show trellis host exec h1 ping -6 -c1 -W2 "$B1V6"
section ping6-b1-h1
show trellis exec b1 ping -6 -c1 -W2 "$L3ADDR6"

say "h1's agent restarts: both shims keep their ifindex and address, and h1 still reaches its containers."
BEFORE="$(ifindex_of h1 "$L2SHIM") $(ifindex_of h1 "$L3SHIM") $L2ADDR $L3ADDR"
trellis lab agent stop h1
trellis lab agent start h1
# A container placed after the restart is configured only by a pass of the new agent.
show trellis run --net=shimnet3 --name=b3 --host=h1 >/dev/null
B3=$(addr_of b3)
echo "b3=$B3"
WAIT_SECONDS=20 wait_until has_shim_route h1 "$L3SHIM" "$B3"
AFTER="$(ifindex_of h1 "$L2SHIM") $(ifindex_of h1 "$L3SHIM") $(shim_addr h1 "$L2SHIM") $(shim_addr h1 "$L3SHIM")"
section restart
echo "before: $BEFORE"
echo "after: $AFTER"
section ping-h1-a1-after-restart
show trellis host exec h1 ping -c1 -W2 "$A1"
section ping-h1-b3-after-restart
show trellis host exec h1 ping -c1 -W2 "$B3"

say "A container removed loses its route through the shim; removing the network removes the shim on every host."
show trellis rm b3
WAIT_SECONDS=20 wait_until sh -c "! ip -n h1 route show dev $L3SHIM proto 211 | grep -q '^$B3 '"
section route-after-rm-b3
ip -n h1 route show dev "$L3SHIM" proto 211
show trellis rm a1 a2 p1
section rm-shimnet2
show trellis network rm shimnet2
WAIT_SECONDS=20 wait_until link_missing h1 "$L2SHIM"
WAIT_SECONDS=20 wait_until link_missing h2 "$L2SHIM"
section after-rm-shimnet2
show ip -n h1 link show "$L2SHIM"
show ip -n h2 link show "$L2SHIM"
# The L3 network's shim, on eth0, is still there.
show ip -n h1 link show "$L3SHIM"
