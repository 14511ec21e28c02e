#!/bin/sh
# Debian's dockerd (docker.io 20.10) on Trellis networks through `trellis docker-plugin`, on two lab hosts
# (`trellis lab run --hosts 2`); test/lab/docker.test.ts asserts on what each section printed.
# Set-up as ../shared/KERNEL-LAB.md found it to work: a cgroup2 mount, data root and exec root under /tmp, no
# iptables and no default bridge, an image imported from busybox-static. Docker finds plugins in the fixed folder
# /run/docker/plugins: each host's dockerd gets a mount namespace of its own where that folder is its host's
# plugin folder. Its exec root (where it bind-mounts each sandbox's network namespace) is a shared mount, so that
# the host's agent, outside that mount namespace, sees the sandbox Docker names in Join.
# Names across hosts: each host's agent also serves DNS on 127.0.0.153 in the host's namespace (--host-dns), and
# that dockerd's /etc/resolv.conf (bind-mounted in its mount namespace) names it: Docker's embedded DNS forwards
# what it does not know there, dialling it from the host's namespace.
set -u
. "$(dirname "$0")/lib.sh"

mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
D=/tmp/dk
HOST_DNS=127.0.0.153
mkdir -p $D/rootfs/bin /run/docker/plugins
cp /bin/busybox $D/rootfs/bin/busybox
for applet in sh ping nslookup ip sleep cat; do ln -s busybox $D/rootfs/bin/$applet; done
tar -C $D/rootfs -cf $D/rootfs.tar .

# Debian's client, not the newer one these machines also carry in /usr/local/bin.
dk() {
  host=$1
  shift
  DOCKER_HOST=unix://$D/$host/docker.sock /usr/bin/docker "$@"
}

start_plugin() {
  trellis docker-plugin --socket=$D/$1/plugins/trellis.sock --data-dir=$D/$1/plugin --host=$1 --docker-socket=$D/$1/docker.sock --log-requests >>$D/$1/plugin.log 2>&1 &
  echo $! > $D/$1/plugin.pid
}

start_dockerd() {
  host=$1
  echo "nameserver $HOST_DNS" > $D/$host/resolv.conf
  [ -e /etc/resolv.conf ] || touch /etc/resolv.conf
  unshare -m --propagation unchanged sh -c "mount --bind $D/$host/plugins /run/docker/plugins && mount --make-private /run/docker/plugins &&
    mount --bind $D/$host/resolv.conf /etc/resolv.conf &&
    exec nsenter --net=/run/netns/$host dockerd --data-root=$D/$host/data --exec-root=$D/$host/exec -H unix://$D/$host/docker.sock \
      --pidfile=$D/$host/docker.pid --iptables=false --ip6tables=false --bridge=none --storage-driver=vfs \
      --exec-opt native.cgroupdriver=cgroupfs" >>$D/$host/dockerd.log 2>&1 &
  # Two dockerds starting under emulation on a loaded machine: minutes, not seconds.
  WAIT_SECONDS=300 wait_until dk $host info
}

# Docker makes a container's namespace when it starts it, after Join: the agent's eth0 comes a moment later.
wait_eth0() {
  WAIT_SECONDS=180 wait_until sh -c "DOCKER_HOST=unix://$D/$1/docker.sock /usr/bin/docker exec $2 ip -4 addr show eth0 | grep -q inet"
}

# The lab's agent again, with --host-dns added to what `trellis lab agent start` runs.
with_host_dns() {
  record=/run/trellis-lab/agents/$1.json
  node -e 'const fs = require("fs"); const r = JSON.parse(fs.readFileSync(process.argv[1])); r.argv.push("--host-dns=" + process.argv[2]); fs.writeFileSync(process.argv[1], JSON.stringify(r))' $record $HOST_DNS
  trellis lab agent stop $1 && trellis lab agent start $1
}

section start
for host in h1 h2; do with_host_dns $host; done
for host in h1 h2; do
  mkdir -p $D/$host/plugins $D/$host/exec
  mount --bind $D/$host/exec $D/$host/exec && mount --make-shared $D/$host/exec
  start_plugin $host
  WAIT_SECONDS=120 wait_until test -S $D/$host/plugins/trellis.sock || tail -20 $D/$host/plugin.log
  start_dockerd $host
  dk $host import $D/rootfs.tar bb >/dev/null
  echo "$host: dockerd $(dk $host version --format '{{.Server.Version}}')"
done

section plugin-ls
ls /run/docker/plugins $D/h1/plugins
for host in h1 h2; do kill -0 "$(cat $D/$host/plugin.pid)" || { echo "the plugin of $host is gone:"; tail -20 $D/$host/plugin.log; }; done

section create
show dk h1 network create -d trellis --ipam-driver=trellis --subnet=192.168.20.0/24 --gateway=192.168.20.1 -o parent=eth0.20 -o ipvlan_mode=l2 -o trellis.network=ipvlan20 ipvlan20
show dk h2 network create -d trellis --ipam-driver=trellis --subnet=192.168.20.0/24 --gateway=192.168.20.1 -o parent=eth0.20 -o ipvlan_mode=l2 -o trellis.network=ipvlan20 ipvlan20
section trellis-ls
trellis network ls
section create-mismatch
show dk h2 network create -d trellis --ipam-driver=trellis --subnet=192.168.21.0/24 -o parent=eth0.20 -o ipvlan_mode=l2 -o trellis.network=ipvlan20 other20
section create-no-ipam
show dk h2 network create -d trellis --subnet=192.168.22.0/24 -o parent=eth0.22 noipam22

section run
start=$(date +%s)
show dk h1 run -d --name=c1 --net=ipvlan20 --cap-add=NET_RAW bb sleep 3600
echo "took $(( $(date +%s) - start )) s"
wait_eth0 h1 c1
echo "eth0 after $(( $(date +%s) - start )) s"
show dk h2 run -d --name=c2 --net=ipvlan20 --ip=192.168.20.50 --cap-add=NET_RAW bb sleep 3600
wait_eth0 h2 c2
section sandbox
grep -c " $D/h1/exec/netns/" /proc/self/mountinfo
section c1-addr
dk h1 exec c1 ip -4 addr show eth0
section c1-inspect
dk h1 inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}/{{.IPPrefixLen}} gw {{.Gateway}}{{end}}' c1
section c1-route
dk h1 exec c1 ip route
section c2-addr
dk h2 exec c2 ip -4 addr show eth0
section ps
trellis ps --net=ipvlan20

section ping-across
show dk h1 exec c1 ping -c 2 -W 2 192.168.20.50
section ping-back
C1=$(dk h1 exec c1 ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
show dk h2 exec c2 ping -c 2 -W 2 "$C1"

section requests
grep -E '^/NetworkDriver\.(CreateNetwork|CreateEndpoint|Join) \{' $D/h1/plugin.log | head -3
section plugin-errors
grep -v '^/' $D/h1/plugin.log $D/h2/plugin.log | head -20
# busybox nslookup asks 127.0.0.11, Docker's embedded DNS; timeout bounds a hang, which must not happen.
lookup() {
  host=$1
  shift
  start=$(date +%s)
  show timeout 30 env DOCKER_HOST=unix://$D/$host/docker.sock /usr/bin/docker exec "$@"
  echo "took $(( $(date +%s) - start )) s"
}
section dns
dk h1 exec c1 cat /etc/resolv.conf
show dk h1 exec c1 nslookup c1
section dns-across
lookup h1 c1 nslookup c2
section dns-back
lookup h2 c2 nslookup c1
section dns-unknown
lookup h1 c1 nslookup nosuch

section rm
show dk h2 rm -f c2
section ps-after-rm
trellis ps --net=ipvlan20
section reuse-ip
for round in 1 2; do
  show dk h2 run -d --name=r$round --net=ipvlan20 --ip=192.168.20.50 --cap-add=NET_RAW bb sleep 3600
  wait_eth0 h2 r$round
  dk h2 exec r$round ip -4 -o addr show eth0 | awk '{print "r'$round'", $4}'
  [ $round = 2 ] || dk h2 rm -f r$round >/dev/null
done

section restart
kill "$(cat $D/h1/docker.pid)"
wait_until sh -c "! kill -0 $(cat $D/h1/docker.pid) 2>/dev/null"
start_dockerd h1
dk h1 network ls --filter driver=trellis --format '{{.Name}} {{.Driver}}'
show dk h1 run -d --name=c4 --net=ipvlan20 --cap-add=NET_RAW bb sleep 3600
wait_eth0 h1 c4
section ps-after-restart
trellis ps --net=ipvlan20
section ping-after-restart
show dk h1 exec c4 ping -c 2 -W 2 192.168.20.50

section plugin-restart
kill "$(cat $D/h1/plugin.pid)"
sleep 1
start_plugin h1
wait_until test -S $D/h1/plugins/trellis.sock
show dk h1 run -d --name=c5 --net=ipvlan20 --cap-add=NET_RAW bb sleep 3600
wait_eth0 h1 c5
show dk h1 exec c5 ping -c 2 -W 2 192.168.20.50

section agent-restart
trellis ps --net=ipvlan20 > $D/ps-before
trellis lab agent stop h1
trellis lab agent start h1
trellis ps --net=ipvlan20 | diff $D/ps-before - && echo "ps unchanged"
show dk h1 exec c5 ping -c 2 -W 2 192.168.20.50

# --- db_net, the reference's L2 example on the hosts' own eth0 (192.168.1.0/24, where h1 is .11 and h2 .12):
# a container reaches the other host's container and the other host, never its own host (the kernel's ipvlan
# isolation). Removed before ipnet210, which takes eth0 in L3: the kernel keeps one ipvlan mode per parent.
section db_net
for host in h1 h2; do
  show dk $host network create -d trellis --ipam-driver=trellis --subnet=192.168.1.0/24 --gateway=192.168.1.1 -o parent=eth0 -o ipvlan_mode=l2 -o trellis.network=db_net db_net
done
# --ip: the subnet is the underlay's, whose hosts' addresses IPAM does not know.
show dk h1 run -d --name=db1 --net=db_net --ip=192.168.1.50 --cap-add=NET_RAW bb sleep 3600
show dk h2 run -d --name=db2 --net=db_net --ip=192.168.1.51 --cap-add=NET_RAW bb sleep 3600
wait_eth0 h1 db1
wait_eth0 h2 db2
section db_net-ping
show dk h1 exec db1 ping -c 2 -W 2 192.168.1.51
section db_net-other-host
show dk h1 exec db1 ping -c 2 -W 2 192.168.1.12
section db_net-own-host
show dk h1 exec db1 ping -c 2 -W 1 192.168.1.11
section db_net-rm
dk h1 rm -f db1 >/dev/null
dk h2 rm -f db2 >/dev/null
for host in h1 h2; do show dk $host network rm db_net; done
trellis network ls | grep -c db_net

# --- L3: ipnet210 on both hosts, routed by Trellis.
section l3
for host in h1 h2; do
  show dk $host network create -d trellis --ipam-driver=trellis --subnet=10.21.0.0/16 -o parent=eth0 -o ipvlan_mode=l3 -o trellis.network=ipnet210 ipnet210
done
show dk h1 run -d --name=l1 --net=ipnet210 --cap-add=NET_RAW bb sleep 3600
show dk h2 run -d --name=l2 --net=ipnet210 --cap-add=NET_RAW bb sleep 3600
wait_eth0 h1 l1
wait_eth0 h2 l2
section l3-route
dk h1 exec l1 ip route
section l3-ping
L2=$(dk h2 exec l2 ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
wait_until dk h1 exec l1 ping -c 1 -W 1 "$L2"
show dk h1 exec l1 ping -c 2 -W 2 "$L2"

# --- ipvlan114, dual-stack: --ip6 given again after docker rm gets its address at once, every time.
section v6
for host in h1 h2; do
  show dk $host network create -d trellis --ipam-driver=trellis --ipv6 --subnet=192.168.114.0/24 --subnet=fd00:114::/64 -o parent=eth0.114 -o trellis.network=ipvlan114 ipvlan114
done
show dk h1 run -d --name=v1 --net=ipvlan114 --cap-add=NET_RAW bb sleep 3600
wait_eth0 h1 v1
for round in 1 2; do
  show dk h2 run -d --name=w$round --net=ipvlan114 --ip6=fd00:114::50 --cap-add=NET_RAW bb sleep 3600
  wait_eth0 h2 w$round
  # busybox's ip takes no scope filter: the network's own prefix picks the global address.
  WAIT_SECONDS=60 wait_until sh -c "DOCKER_HOST=unix://$D/h2/docker.sock /usr/bin/docker exec w$round ip -6 addr show eth0 | grep -q 'inet6 fd00:114:'"
  dk h2 exec w$round ip -6 addr show eth0 | awk '/inet6 fd00:114:/ {print "w'$round'", $2}'
  [ $round = 2 ] || dk h2 rm -f w$round >/dev/null
done
section v6-sandbox
# What Docker left in the sandbox: libnetwork turns IPv6 off in each one, the agent on for its link.
W2=$(dk h2 inspect --format '{{.NetworkSettings.SandboxKey}}' w2)
for conf in all eth0 lo; do echo "$conf disable_ipv6=$(nsenter --net=$W2 cat /proc/sys/net/ipv6/conf/$conf/disable_ipv6)"; done
nsenter --net=$W2 ip -6 addr
section v6-ping
wait_until dk h1 exec v1 ping -6 -c 1 -W 1 fd00:114::50
show dk h1 exec v1 ping -6 -c 2 -W 2 fd00:114::50

# --- Docker's own ipvlan driver with Trellis's IPAM on both hosts: cluster-wide addresses, never one twice.
section ipvlan-ipam
for host in h1 h2; do
  show dk $host network create -d ipvlan --ipam-driver=trellis --ipam-opt trellis.network=ipam30 --subnet=192.168.30.0/24 -o parent=eth0.30 ipam30
done
show dk h1 run -d --name=i1 --net=ipam30 --cap-add=NET_RAW bb sleep 3600
show dk h2 run -d --name=i2 --net=ipam30 --cap-add=NET_RAW bb sleep 3600
I1=$(dk h1 exec i1 ip -4 -o addr show eth0 | awk '{print $4}')
I2=$(dk h2 exec i2 ip -4 -o addr show eth0 | awk '{print $4}')
echo "i1 $I1"
echo "i2 $I2"
section ipvlan-ipam-ping
show dk h2 exec i2 ping -c 2 -W 2 "${I1%/*}"

section network-rm
for host in h1 h2; do
  dk $host rm -f $(dk $host ps -aq) >/dev/null
  show dk $host network rm ipvlan20 ipnet210 ipvlan114 ipam30
done
trellis network ls
section leftovers
trellis ps
echo "address records: $(find $D/h1/plugin/addresses $D/h2/plugin/addresses -type f 2>/dev/null | wc -l)"
echo "endpoint records: $(find $D/h1/plugin/endpoints $D/h2/plugin/endpoints -type f 2>/dev/null | wc -l)"

for host in h1 h2; do kill "$(cat $D/$host/docker.pid)" "$(cat $D/$host/plugin.pid)" 2>/dev/null; done
