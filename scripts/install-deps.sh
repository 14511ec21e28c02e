#!/usr/bin/env bash
# Installs what Trellis and its tests need on a Debian machine, then the npm packages. Safe to re-run:
# it installs only what is missing.
#   nats-server                      the bus (JetStream streams and KV)
#   qemu-system-x86 linux-image-amd64 busybox-static   the lab: a kernel with ipvlan, 802.1Q and dummy
#   iproute2 iputils-ping kmod util-linux              namespaces, links, pings, modules, nsenter
#   containernetworking-plugins      CNI host-local, the baseline of `npm run bench:ipam`; macvlan and bridge
#                                    under trellis-ipam in the CNI contract tests
#   podman                           the lab's real runtime for the trellis CNI plugin (CNI backend, crun, conmon)
#   docker.io                        the lab's dockerd (with containerd, runc) for `trellis docker-plugin`: its
#                                    system service is stopped and disabled (the lab starts its own, in the guest)
#   openssl                          `trellis certs`: the cluster's CA, keys and certificates
#   bird2                            the BGP speaker of `trellis agent --bgp-peer`, and the lab's routers
#   prometheus                       test/integration/prometheus.test.ts scrapes the services with it (its own
#                                    instance, on loopback): the package's system service is stopped and disabled
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(nats-server qemu-system-x86 linux-image-amd64 busybox-static iproute2 iputils-ping kmod util-linux containernetworking-plugins openssl bird2 prometheus podman docker.io)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "failed to install ${missing[*]}: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  # Debian starts prometheus as a system service on port 9090: the tests run their own, and want no other.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now prometheus.service || true
  fi
  # Debian's docker.io starts dockerd on the machine, which would make its default bridge: the lab runs its own.
  if [[ " ${missing[*]} " == *" docker.io "* ]] && [ -d /run/systemd/system ]; then
    systemctl disable --now docker.service docker.socket containerd.service || true
  fi
fi

if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci
fi
