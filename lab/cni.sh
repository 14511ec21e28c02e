#!/bin/sh
# Debian's podman (CNI backend) on Trellis networks through the trellis CNI plugin, on two lab hosts
# (`trellis lab run --hosts 2`); test/lab/cni.test.ts asserts on what each section printed.
# Set-up as ../shared/KERNEL-LAB.md found it to work: a cgroup2 mount, every config and state under /tmp,
# podman entered into a host with nsenter (not ip netns exec, which would mount a fresh /sys over the cgroups),
# and an image imported from busybox-static, no registry.
set -u
. "$(dirname "$0")/lib.sh"

# The plugins ask their host's agent (on /run/trellis/HOST.sock), whose local API calls the planner. The lab's
# planner listens on the guest's loopback, which the hosts' namespaces do not see: a replica of this script's own on
# the underlay, where the agents look for it (services/lab/config.ts AGENT_PLANNER_ADDR), on the same NATS and IPAM
# (its metrics off: the lab's own planner has the default port).
export TRELLIS_PLANNER_ADDR=192.168.1.254:7720
trellis planner --listen="$TRELLIS_PLANNER_ADDR" --ipam=127.0.0.1:7711 --metrics=off >>/tmp/lab/cni-planner.log 2>&1 &
wait_until trellis network ls

mkdir -p /sys/fs/cgroup && mount -t cgroup2 none /sys/fs/cgroup
P=/tmp/podman
mkdir -p $P/rootfs/bin $P/tmp
cat > $P/storage.conf <<CONF
[storage]
driver = "vfs"
runroot = "$P/run"
graphroot = "$P/graph"
CONF
cat > $P/containers.conf <<CONF
[engine]
cgroup_manager = "cgroupfs"
events_logger = "none"
tmp_dir = "$P/tmp"
[network]
network_backend = "cni"
cni_plugin_dirs = ["/tmp/cni/bin", "/usr/lib/cni"]
CONF
export CONTAINERS_STORAGE_CONF=$P/storage.conf CONTAINERS_CONF=$P/containers.conf
cp /bin/busybox $P/rootfs/bin/busybox
for applet in sh ping nslookup ip sleep cat; do ln -s busybox $P/rootfs/bin/$applet; done
tar -C $P/rootfs -cf $P/rootfs.tar .
podman import $P/rootfs.tar localhost/bb >/dev/null

# podman on host H, with H's conflists.
pod() {
  host=$1
  shift
  nsenter --net=/run/netns/$host podman --cni-config-dir=/tmp/cni/$host "$@"
}

section create
show trellis network create --subnet=10.60.0.0/24 --gateway=10.60.0.1 -o parent=eth0.60 cni60

section install
for host in h1 h2; do TRELLIS_AGENT_SOCKET=/run/trellis/$host.sock trellis cni install --bin-dir=/tmp/cni/bin --conf-dir=/tmp/cni/$host cni60; done
cat /tmp/cni/h1/cni60.conflist

section run
start=$(date +%s)
show pod h1 run -d --name=p1 --network=cni60 --dns=127.0.0.11 --cap-add=NET_RAW localhost/bb sleep 3600
echo "took $(( $(date +%s) - start )) s"
show pod h2 run -d --name=p2 --network=cni60 --ip=10.60.0.50 --dns=127.0.0.11 --cap-add=NET_RAW localhost/bb sleep 3600

section p1-addr
pod h1 exec p1 ip -4 addr show eth0
section p1-link
# busybox's ip has no -d: the link as the host sees it in the runtime's namespace.
nsenter --net="$(pod h1 inspect --format '{{.NetworkSettings.SandboxKey}}' p1)" ip -d link show eth0
section p2-addr
pod h2 exec p2 ip -4 addr show eth0
section ps
trellis ps --net=cni60

section ping-across
P2=10.60.0.50
show pod h1 exec p1 ping -c 2 -W 2 $P2
section ping-back
P1=$(pod h1 exec p1 ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1)
show pod h2 exec p2 ping -c 2 -W 2 "$P1"
section ping-by-name
show pod h2 exec p2 ping -c 2 -W 2 p1

section rm
show pod h2 rm -f -t 0 p2
section ps-after-rm
trellis ps --net=cni60
section netns-after-rm
ls /run/netns
section reuse-ip
show pod h1 run -d --name=p3 --network=cni60 --ip=10.60.0.50 --cap-add=NET_RAW localhost/bb sleep 3600
pod h1 exec p3 ip -4 addr show eth0

# --- L3: a podman container on h1 reaches a `trellis run` container on h2 through the distributed routes.
section l3
show trellis network create --subnet=10.61.0.0/16 -o parent=eth0 -o ipvlan_mode=l3 cni61
for host in h1 h2; do TRELLIS_AGENT_SOCKET=/run/trellis/$host.sock trellis cni install --bin-dir=/tmp/cni/bin --conf-dir=/tmp/cni/$host cni61 >/dev/null; done
trellis run --net=cni61 --name=t2 --host=h2 >/dev/null
T2=$(addr_of t2)
show pod h1 run -d --name=q1 --network=cni61 --cap-add=NET_RAW localhost/bb sleep 3600
section l3-route
pod h1 exec q1 ip route
section l3-ping
wait_until pod h1 exec q1 ping -c 1 -W 1 "$T2"
show pod h1 exec q1 ping -c 2 -W 2 "$T2"

# --- Debian's ipvlan plugin with trellis-ipam on two hosts: cluster-wide addresses, never one twice.
section ipvlan-ipam
show trellis network create --subnet=10.62.0.0/24 --gateway=10.62.0.1 cni62
for host in h1 h2; do
  cat > /tmp/cni/$host/cni62.conflist <<CONF
{"cniVersion": "1.0.0", "name": "cni62", "plugins": [{"type": "ipvlan", "master": "eth0.60",
  "ipam": {"type": "trellis-ipam", "network": "cni62", "socket": "/run/trellis/$host.sock"}}]}
CONF
done
show pod h1 run -d --name=i1 --network=cni62 --cap-add=NET_RAW localhost/bb sleep 3600
show pod h2 run -d --name=i2 --network=cni62 --cap-add=NET_RAW localhost/bb sleep 3600
I1=$(pod h1 exec i1 ip -4 -o addr show eth0 | awk '{print $4}')
I2=$(pod h2 exec i2 ip -4 -o addr show eth0 | awk '{print $4}')
echo "i1 $I1"
echo "i2 $I2"
section ipvlan-ipam-ping
show pod h2 exec i2 ping -c 2 -W 2 "${I1%/*}"

section timing
# Start-up of the plugin (VERSION) next to Node's own with an empty script, in this run's emulated kernel.
echo > /tmp/empty.js
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
t=$(date +%s%N); node /tmp/empty.js; echo "node empty script: $(ms $t) ms"
t=$(date +%s%N); echo '{"cniVersion":"1.1.0"}' | CNI_COMMAND=VERSION /tmp/cni/bin/trellis >/dev/null; echo "plugin VERSION: $(ms $t) ms"
ls -l /run/trellis/h1.sock
t=$(date +%s%N); pod h1 run -d --name=p4 --network=cni60 localhost/bb sleep 3600 >/dev/null; echo "podman run on cni60: $(ms $t) ms"

section status
for host in h1 h2; do
  echo '{"cniVersion":"1.1.0","name":"cni60","type":"trellis","network":"cni60","socket":"/run/trellis/'$host'.sock"}' |
    CNI_COMMAND=STATUS nsenter --net=/run/netns/$host /tmp/cni/bin/trellis
  echo "status $host exit $?"
done
