#!/bin/sh
# The Trellis walkthrough: the reference driver's single-host examples, run across the hosts of the lab.
# Run it with `npm run lab:walkthrough` (or `trellis lab run --hosts 2 --upstreams 1 $PWD/lab/walkthrough.sh`).
# Every step prints what it does, then what the user would see; test/lab/walkthrough.test.ts asserts on it.
set -u
. "$(dirname "$0")/lib.sh"

say "Hosts h1 (192.168.1.11) and h2 (192.168.1.12) share one Ethernet segment with u1 (192.168.1.201), an upstream"
say "router; each runs a Trellis agent (u1's only installs routes)."

# A Trellis route (protocol 210) on a host that covers the address, via the given next hop; none at all.
has_route() {
  ip -n "$1" route show proto 210 match "$2" | grep -q " via $3 "
}
no_route() {
  ! ip -n "$1" route show proto 210 match "$2" | grep -q .
}

say "An L2 network on the hosts' own interface eth0, as in the reference's db_net example."
section create-db_net
show trellis network create -d ipvlan --subnet=192.168.1.0/24 --gateway=192.168.1.1 -o ipvlan_mode=l2 -o parent=eth0 db_net

say "Two containers on h1; ipv2 pings ipv1 over the ipvlan."
section run-ipv1
show trellis run --net=db_net --name=ipv1 --host=h1
section run-ipv2
show trellis run --net=db_net --name=ipv2 --host=h1
section ping-ipv1-from-ipv2
show trellis exec ipv2 ping -c 2 -W 2 192.168.1.2

say "A VLAN network: parent eth0.20 does not exist yet, so Trellis creates it on every host."
section create-ipvlan20
show trellis network create -d ipvlan --subnet=192.168.20.0/24 --gateway=192.168.20.1 -o parent=eth0.20 ipvlan20
wait_until link_exists h1 eth0.20
wait_until link_exists h2 eth0.20
section vlan-h1
ip -n h1 -d link show eth0.20
section vlan-h2
ip -n h2 -d link show eth0.20

say "One container on each host, on VLAN 20: they ping each other across the segment."
section run-ivlan_test1
show trellis run --net=ipvlan20 --name=ivlan_test1 --host=h1
section run-ivlan_test2
show trellis run --net=ipvlan20 --name=ivlan_test2 --host=h2
section ping-across-hosts
show trellis exec ivlan_test2 ping -c 2 -W 2 192.168.20.2

say "Inside a container, the gateway is the default route."
section route-ivlan_test1
show trellis exec ivlan_test1 ip route

say "Restarting h1's agent changes nothing that is already right: same link, same addresses."
section before-restart
ip -n ivlan_test1@h1 -o link show eth0 | cut -d: -f1-2
ip -n ivlan_test1@h1 -o addr show eth0 | awk '{print $4}'
trellis lab agent stop h1
trellis lab agent start h1
section after-restart
ip -n ivlan_test1@h1 -o link show eth0 | cut -d: -f1-2
ip -n ivlan_test1@h1 -o addr show eth0 | awk '{print $4}'

say "A network with containers cannot be removed; once they are gone, eth0.20 goes with it."
section rm-busy-network
show trellis network rm ipvlan20
section rm-containers
show trellis rm ivlan_test1 ivlan_test2
section rm-ipvlan20
show trellis network rm ipvlan20
wait_until link_missing h1 eth0.20
wait_until link_missing h2 eth0.20
section vlan-after-rm
show ip -n h1 link show eth0.20
show ip -n h2 link show eth0.20

say "VLAN 30 with the mode given explicitly: containers on h1 and h2 ping each other."
section create-ipvlan30
show trellis network create -d ipvlan --subnet=192.168.30.0/24 --gateway=192.168.30.1 -o parent=eth0.30 -o ipvlan_mode=l2 ipvlan30
section run-ivlan_test3
show trellis run --net=ipvlan30 --name=ivlan_test3 --host=h1
section run-ivlan_test4
show trellis run --net=ipvlan30 --name=ivlan_test4 --host=h2
section ping-vlan30
show trellis exec ivlan_test4 ping -c 2 -W 2 192.168.30.2
section rm-ipvlan30
show trellis rm ivlan_test3 ivlan_test4
show trellis network rm ipvlan30

say "eth0.40 made by hand on h1 before the network: Trellis uses it, makes the missing one on h2, and on"
say "network rm deletes only its own."
ip -n h1 link add link eth0 name eth0.40 type vlan id 40
ip -n h1 link set eth0.40 up
section create-ipvlan40-manual
show trellis network create -d ipvlan --subnet=192.168.40.0/24 --gateway=192.168.40.1 -o parent=eth0.40 ipvlan40
wait_until link_exists h2 eth0.40
section rm-ipvlan40-manual
show trellis network rm ipvlan40
wait_until link_missing h2 eth0.40
sleep 3
section eth0.40-after-rm
show ip -n h1 -o link show eth0.40
show ip -n h2 -o link show eth0.40
ip -n h1 link del eth0.40

say "A sub-interface made by hand, with any name, is used as the parent and never deleted."
ip -n h1 link add link eth0 name foo type vlan id 40
ip -n h1 link set foo up
section create-ipvlan40
show trellis network create -d ipvlan --subnet=192.168.40.0/24 --gateway=192.168.40.1 -o parent=foo ipvlan40
section run-ivlan_test5
show trellis run --net=ipvlan40 --name=ivlan_test5 --host=h1
section rm-ipvlan40
show trellis rm ivlan_test5
show trellis network rm ipvlan40
say "Giving h1's agent time to converge (it would delete foo now if it ever did)."
sleep 5
section foo-after-rm
show ip -n h1 -o link show foo

say "An L3 network across hosts: each host routes its containers' addresses itself and announces them; the other"
say "hosts and the upstream u1 install a route to them via that host. (db_net goes first: the kernel keeps one"
say "ipvlan mode per parent, and this network uses eth0 too.)"
show trellis rm ipv1 ipv2
show trellis network rm db_net
section create-l3net
show trellis network create -d ipvlan -o ipvlan_mode=l3 --subnet=10.1.0.0/16 -o parent=eth0 l3net
section run-web1
show trellis run --net=l3net --name=web1 --host=h1
section run-web2
show trellis run --net=l3net --name=web2 --host=h2
WEB1=$(addr_of web1)
WEB2=$(addr_of web2)
WAIT_SECONDS=20 wait_until has_route h1 "$WEB2" 192.168.1.12
WAIT_SECONDS=20 wait_until has_route h2 "$WEB1" 192.168.1.11
WAIT_SECONDS=20 wait_until has_route u1 "$WEB2" 192.168.1.12
for host in h1 h2 u1; do
  section "l3-routes-$host"
  ip -n "$host" route show proto 210
done
section ping-l3-across-hosts
show trellis exec web1 ping -c 2 -W 2 "$WEB2"
section ping-u1-web1
show trellis host exec u1 ping -c 2 -W 2 "$WEB1"
section ping-u1-web2
show trellis host exec u1 ping -c 2 -W 2 "$WEB2"

say "Containers find each other by name, across hosts."
WAIT_SECONDS=10 wait_until ip netns exec web1@h1 ping -c 1 -W 1 web2
section ping-by-name
show ip netns exec web1@h1 ping -c 1 -W 2 web2

say "h2's agent stops: within its heartbeat window (10 s) no host routes to web2 any more; when it starts"
say "again, the routes are back."
trellis lab agent stop h2
stopped=$(date +%s)
WAIT_SECONDS=30 wait_until no_route h1 "$WEB2"
WAIT_SECONDS=30 wait_until no_route u1 "$WEB2"
section h2-stopped
echo "withdrawn after $(( $(date +%s) - stopped )) s"
ip -n h1 route show proto 210
ip -n u1 route show proto 210
trellis lab agent start h2
WAIT_SECONDS=30 wait_until has_route h1 "$WEB2" 192.168.1.12
WAIT_SECONDS=30 wait_until has_route u1 "$WEB2" 192.168.1.12
section h2-started
ip -n h1 route show proto 210
ip -n u1 route show proto 210
section ping-after-h2-start
show trellis host exec u1 ping -c 2 -W 2 "$WEB2"
section rm-l3net
show trellis rm web1 web2
show trellis network rm l3net

say "Bad input gets a clear error and changes nothing."
section ls-before-bad
trellis network ls
section bad-vlan
show trellis network create -d ipvlan -o parent=eth0.5000 bad
section ls-after-bad
trellis network ls

say "Done."
