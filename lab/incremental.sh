#!/bin/sh
# One change costs one change (`trellis lab run --hosts 1`): adding and removing a container leaves every other
# container's links, addresses and routes alone, and a container's eth0 or a parent deleted by hand is back
# within a second (the agent listens to the kernel's link notifications; its full pass runs only every 15 s).
# test/lab/incremental.test.ts asserts on what it prints.
set -u
. "$(dirname "$0")/lib.sh"
cd "$(dirname "$0")/.."

# Everything the kernel has for one container, with its link's index: what must not change.
kernel_state() {
  ip -n "$1@h1" -d link show
  ip -n "$1@h1" addr show
  ip -n "$1@h1" route show table all
  ip -n "$1@h1" -6 route show table all
}

# The time from the first link deletion to the first address added on eth0 again, from `ip -ts monitor` output:
# the kernel's own timestamps, so that the shell's polling does not count.
repair_ms() {
  awk '
    function ms(line) { match(line, /T[0-9]+:[0-9]+:[0-9.]+/); split(substr(line, RSTART + 1, RLENGTH - 1), t, ":"); return (t[1] * 3600 + t[2] * 60 + t[3]) * 1000 }
    /Deleted/ && / eth0/ && !deleted { deleted = ms($0) }
    deleted && !/Deleted/ && / inet .* eth0/ { printf "back after %d ms\n", ms($0) - deleted; found = 1; exit }
    END { if (!found) print "not back" }
  ' "$1"
}

has_address() {
  ip -n "$1" -o addr show dev eth0 | grep -q " $2/"
}

say "An L2 network on a VLAN sub-interface Trellis makes, and three containers on h1."
section create
show trellis network create -d ipvlan --subnet=10.40.0.0/24 -o parent=eth0.40 vnet
for name in c1 c2 c3; do
  trellis run -d --net=vnet --name="$name" --host=h1 >/dev/null || echo "failed to run $name"
done
trellis ps --net=vnet

say "While c4 is added and c3 removed, the kernel of c1 and c2 is watched (ip monitor): nothing may happen there."
kernel_state c1 >/tmp/c1.before
kernel_state c2 >/tmp/c2.before
ip -n c1@h1 monitor link address route >/tmp/c1.monitor 2>&1 &
MONITOR1=$!
ip -n c2@h1 monitor link address route >/tmp/c2.monitor 2>&1 &
MONITOR2=$!
sleep 1
WINDOW_START=$(date +%s%6N)
section run-c4
show trellis run -d --net=vnet --name=c4 --host=h1
section rm-c3
show trellis rm c3
sleep 2
kill "$MONITOR1" "$MONITOR2"
# The agent's spans between these two instants (microseconds) must name no namespace but c4's and c3's.
section window
echo "$WINDOW_START $(date +%s%6N)"
section others-unchanged
kernel_state c1 | diff /tmp/c1.before - && kernel_state c2 | diff /tmp/c2.before -
echo "exit $?"
section others-monitor
cat /tmp/c1.monitor /tmp/c2.monitor
echo "end of monitor"
section c3-gone
show ls /run/netns/c3@h1
section c4-ready
show trellis exec c4 ip -4 -o addr show eth0

say "c1's eth0 deleted by hand (ip link del): the agent is told by the kernel and puts it back."
C1=$(addr_of c1)
C2=$(addr_of c2)
OTHERS=$(kernel_state c2)
ip -ts -n c1@h1 monitor link address >/tmp/c1.repair 2>&1 &
MONITOR=$!
sleep 1
ip -n c1@h1 link del eth0
WAIT_SECONDS=10 wait_until has_address c1@h1 "$C1"
kill "$MONITOR"
section eth0-repair
repair_ms /tmp/c1.repair
section eth0-repair-others
[ "$OTHERS" = "$(kernel_state c2)" ]
echo "exit $?"

say "The parent eth0.40 deleted by hand, which takes every container's eth0 with it: all of it comes back."
ip -ts -n c1@h1 monitor link address >/tmp/c1.parent 2>&1 &
MONITOR1=$!
ip -ts -n c2@h1 monitor link address >/tmp/c2.parent 2>&1 &
MONITOR2=$!
sleep 1
ip -n h1 link del eth0.40
WAIT_SECONDS=10 wait_until has_address c1@h1 "$C1"
WAIT_SECONDS=10 wait_until has_address c2@h1 "$C2"
kill "$MONITOR1" "$MONITOR2"
section parent-repair
repair_ms /tmp/c1.parent
repair_ms /tmp/c2.parent
ip -n h1 -d link show eth0.40 | grep -o "vlan protocol 802.1Q id 40"
section ping-after-repair
show trellis exec c1 ping -c 2 -W 2 "$C2"
