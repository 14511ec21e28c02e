#!/bin/sh
# The reference driver's examples (../shared/reference/ipvlan-driver.txt), translated from docker to
# trellis, on two lab hosts; test/lab/reference.test.ts asserts on what each section printed.
# `trellis` is called only where it is the point (every call costs seconds in the emulated kernel);
# facts are read with `ip -n <container>@<host>` and pings by address run with `ip netns exec`.
set -u
. "$(dirname "$0")/lib.sh"

# Runs a command in a container's namespace on the host that has it.
in_c() {
  c=$1
  shift
  ip netns exec "$c" "$@"
}

# --- Modes and flags: one network per parent, since the kernel keeps one mode and flag per parent.
section create-ipnet210
show trellis network create -d ipvlan --subnet=192.168.214.0/24 --subnet=10.1.214.0/24 --gateway=192.168.214.1 -o ipvlan_mode=l3 ipnet210
section create-l3snet
show trellis network create -d ipvlan --subnet=10.3.0.0/24 -o ipvlan_mode=l3s -o ipvlan_flag=private l3snet
section create-vepanet
show trellis network create -d ipvlan --subnet=10.4.0.0/24 -o ipvlan_flag=vepa vepanet
section run-l3
trellis run --net=ipnet210 --ip=192.168.214.10 --name=c214a --host=h1
trellis run --net=ipnet210 --ip=10.1.214.10 --name=c214b --host=h1
trellis run --net=l3snet --name=l3s1 --host=h1
trellis run --net=vepanet --name=vepa1 --host=h2
section link-c214a
ip -n c214a@h1 -d link show eth0
section link-l3s1
ip -n l3s1@h1 -d link show eth0
section link-vepa1
ip -n vepa1@h2 -d link show eth0

# --- L3 (ipnet210): two subnets with no parent route to each other; the default route is the device.
section l3-ping-214-to-10
show in_c c214a@h1 ping -c 2 -W 2 10.1.214.10
section l3-ping-10-to-214
show in_c c214b@h1 ping -c 2 -W 2 192.168.214.10
section l3-route
ip -n c214a@h1 route
section l3-name
show trellis exec c214b ping -c 2 -W 2 c214a
section vepa-route
ip -n vepa1@h2 route

# --- L2 multi-subnet (ipvlan114) on VLAN 114, across hosts; the two subnets need a router.
section create-ipvlan114
show trellis network create -d ipvlan --subnet=192.168.114.0/24 --subnet=192.168.116.0/24 --gateway=192.168.114.254 --gateway=192.168.116.254 -o parent=eth0.114 -o ipvlan_mode=l2 ipvlan114
section run-ipvlan114
trellis run --net=ipvlan114 --ip=192.168.114.10 --name=a114 --host=h1
trellis run --net=ipvlan114 --ip=192.168.114.11 --name=b114 --host=h2
trellis run --net=ipvlan114 --ip=192.168.116.10 --name=c116 --host=h1
section link-a114
ip -n a114@h1 -d link show eth0
section l2-ping-same-subnet
show in_c b114@h2 ping -c 2 -W 2 192.168.114.10
section l2-ping-other-subnet
show in_c c116@h1 ping -c 2 -W 1 192.168.114.10
# Names go through h2's agent's DNS server at 127.0.0.11 inside b114@h2: `trellis exec` (ip netns exec)
# finds it in the resolv.conf mounted over /etc/resolv.conf, nsenter (no mounts, no hosts file) is told it.
section name-across-hosts
show trellis exec b114 ping -c 2 -W 2 a114
section resolv-conf-b114
# (its comment line left out: a "# " line ends a section for test/support/lab.ts)
grep -v '^#' /etc/netns/b114@h2/resolv.conf
section hosts-b114
cat /etc/netns/b114@h2/hosts
section nslookup-across-hosts
show nsenter --net=/run/netns/b114@h2 busybox nslookup c116 127.0.0.11
# Milliseconds since $started.
ms_since() {
  echo $(( ($(date +%s%N) - started) / 1000000 ))
}
# Looks d114 up from b114@h2 until the answer is $1 (found or gone), at most 10 s; prints how long after
# $started the first lookup that saw it began (each lookup, a process start under emulation, takes a while).
lookup_d114_until() {
  while :; do
    began=$(ms_since)
    if nsenter --net=/run/netns/b114@h2 busybox nslookup -type=A d114 127.0.0.11 >/dev/null 2>&1; then seen=found; else seen=gone; fi
    [ "$seen" = "$1" ] || [ "$began" -gt 10000 ] && break
  done
  echo "$1 by the lookup begun $began ms after"
}
# A container of h1 asked for from h2 from the moment `trellis run` returns (h1 reports it ready).
section nslookup-new-container
trellis run --net=ipvlan114 --ip=192.168.114.12 --name=d114 --host=h1
started=$(date +%s%N)
lookup_d114_until found
show nsenter --net=/run/netns/b114@h2 busybox nslookup -type=A d114 127.0.0.11
section nslookup-unknown
started=$(date +%s%N)
show nsenter --net=/run/netns/b114@h2 busybox nslookup -type=A nosuchcontainer 127.0.0.11
echo "answered after $(ms_since) ms"
section nslookup-removed-container
show trellis rm d114
started=$(date +%s%N)
lookup_d114_until gone

# --- Dual stack (ipvlan140): two IPv4 subnets and one IPv6, all with gateways, on VLAN 140.
section create-ipvlan140
show trellis network create -d ipvlan --subnet=192.168.140.0/24 --subnet=192.168.142.0/24 --gateway=192.168.140.1 --gateway=192.168.142.1 --subnet=2001:db8:abc9::/64 --gateway=2001:db8:abc9::22 -o parent=eth0.140 -o ipvlan_mode=l2 ipvlan140
section run-ipvlan140
trellis run --net=ipvlan140 --ip6=2001:db8:abc9::51 --name=d140 --host=h1
trellis run --net=ipvlan140 --ip=192.168.140.10 --name=e140 --host=h2
section addr-d140
ip -n d140@h1 addr show eth0
section route-d140
ip -n d140@h1 route
ip -n d140@h1 -6 route
section dual-ping
show in_c e140@h2 ping -c 2 -W 2 192.168.140.2
show in_c e140@h2 ping -6 -c 2 -W 2 2001:db8:abc9::51

# --- IPv6 only (v6ipvlan139): a default IPv4 subnet is added, as the reference shows.
section create-v6ipvlan139
show trellis network create -d ipvlan --ipv6 --subnet=2001:db8:abc2::/64 --gateway=2001:db8:abc2::22 -o parent=eth0.139 v6ipvlan139
section run-v6ipvlan139
trellis run --net=v6ipvlan139 --name=f139 --host=h1
trellis run --net=v6ipvlan139 --name=g139 --host=h2
section addr-f139
ip -n f139@h1 addr show eth0
section v6-ping
show in_c g139@h2 ping -6 -c 2 -W 2 2001:db8:abc2::1

# --- Isolation: a container cannot reach its own host's parent address (but can reach another host's);
# different VLANs cannot reach each other.
section create-db_net
show trellis network create -d ipvlan --subnet=192.168.1.0/24 --gateway=192.168.1.1 -o parent=eth0 db_net
trellis run --net=db_net --ip=192.168.1.50 --name=db1 --host=h1
section isolation-own-host
show in_c db1@h1 ping -c 2 -W 1 192.168.1.11
section isolation-other-host
show in_c db1@h1 ping -c 2 -W 2 192.168.1.12
section isolation-vlans
show in_c b114@h2 ping -c 2 -W 1 192.168.140.10

# --- The reference's --ip6 bug, fixed: the address is free again the moment its container is removed.
section reuse-ip6
show trellis rm d140
show trellis run --net=ipvlan140 --ip6=2001:db8:abc9::51 --name=d140b --host=h1
ip -n d140b@h1 -o addr show eth0 | awk '{print $4}'
section netns-etc-after-rm
ls /etc/netns

# --- --internal: a dummy parent and no default route.
section create-isolated2
show trellis network create -d ipvlan --subnet=192.168.11.0/24 --internal isolated2
trellis run --net=isolated2 --name=cid2 --host=h1
section internal-route
ip -n cid2@h1 route
ip -n cid2@h1 -6 route

# --- Even --subnet may be left out: the next default subnet is assigned (isolated3).
section create-isolated3
show trellis network create -d ipvlan isolated3
trellis run --net=isolated3 --name=cid3 --host=h2
section addr-cid3
ip -n cid3@h2 -o addr show eth0

# --- L3 dual stack, multi-subnet (ipnet110) on VLAN 118: static v4, v6 or both; default dev eth0 for both.
section create-ipnet110
show trellis network create -d ipvlan --subnet=192.168.110.0/24 --subnet=192.168.112.0/24 --subnet=2001:db8:abc6::/64 -o parent=eth0.118 -o ipvlan_mode=l3 ipnet110
section run-ipnet110
trellis run --net=ipnet110 --name=j110 --host=h1
trellis run --net=ipnet110 --ip6=2001:db8:abc6::10 --name=k110 --host=h1
trellis run --net=ipnet110 --ip=192.168.112.30 --name=m110 --host=h1
trellis run --net=ipnet110 --ip6=2001:db8:abc6::50 --ip=192.168.112.50 --name=n110 --host=h1
section addr-ipnet110
for c in j110 k110 m110 n110; do echo "$c $(ip -n $c@h1 -o addr show eth0 scope global | awk '{print $4}' | tr '\n' ' ')"; done
section route-n110
ip -n n110@h1 route
ip -n n110@h1 -6 route
section l3-dual-ping
show in_c j110@h1 ping -c 2 -W 2 192.168.112.50
show in_c k110@h1 ping -6 -c 2 -W 2 2001:db8:abc6::50

# --- A parent with no dot that exists on no host: refused at create, naming what the hosts have; nothing is made.
section create-nosuchnet
show trellis network create -d ipvlan --subnet=10.6.0.0/24 -o parent=nosuch0 nosuchnet
section ls-after-nosuch
trellis network ls
