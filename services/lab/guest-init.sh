#!/bin/busybox sh
# PID 1 of the lab guest, reached by switch_root onto the host's root filesystem (shared over 9p).
# The kernel command line gives: LAB_RUN (host folder with config.json, and "out" when --out is used),
# LAB_NODE, LAB_GUEST (compiled guest.js) and LAB_MARK (prefix of the start and exit marker lines).
# Static busybox for every step: each dynamically linked binary costs ~0.4 s of library loading over 9p.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
bb=/bin/busybox
$bb mount -t proc proc /proc
$bb mount -t sysfs sysfs /sys
$bb mount -t devtmpfs dev /dev
$bb mkdir -p /dev/pts /dev/shm
$bb mount -t devpts devpts /dev/pts
# Our own /run and /tmp, so that namespaces, logs and stores never land on the host's disk. The host
# folders we need are bound in first, while /tmp (where they usually live) is still the host's.
$bb mount -t tmpfs run /run
$bb mkdir -p /run/trellis-lab/host /run/trellis-lab/out
$bb mount -o bind "$LAB_RUN" /run/trellis-lab/host
if [ -d "$LAB_RUN/out" ]; then $bb mount -o bind "$LAB_RUN/out" /run/trellis-lab/out; fi
$bb mount -t tmpfs tmp /tmp
# Containers' hosts files (the agent writes them where `ip netns exec` looks) stay in the guest too. The
# mount point is the host's own /etc/netns: made only if missing, and removed again at the end.
made_etc_netns=no
if [ ! -d /etc/netns ]; then $bb mkdir /etc/netns && made_etc_netns=yes; fi
$bb mount -t tmpfs netns /etc/netns
read -r uptime _ < /proc/uptime
echo "$LAB_MARK start $uptime"
"$LAB_NODE" "$LAB_GUEST" /run/trellis-lab/host/config.json
status=$?
$bb umount /etc/netns
if [ "$made_etc_netns" = yes ]; then $bb rmdir /etc/netns; fi
$bb sync
echo "$LAB_MARK exit $status"
exec $bb poweroff -f
