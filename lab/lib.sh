# Helpers for lab scripts: sourced, never run. Lab scripts run in the lab's root namespace with
# `trellis` on PATH; hosts are the namespaces h1, h2, ...

# Narration: a blank line and "# …", which ends any section (test/support/lab.ts).
say() {
  echo
  echo "# $*"
}

# A container's IPv4 address, without prefix length.
addr_of() {
  trellis exec "$1" ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1
}

# A container's global IPv6 address, without prefix length.
addr6_of() {
  trellis exec "$1" ip -6 -o addr show eth0 scope global | awk '{print $4}' | cut -d/ -f1
}

# Starts a labelled section of output; tests find what a command printed by its label.
section() {
  echo "=== $1"
}

# Runs a command until it succeeds, at most $WAIT_SECONDS (default 60) seconds.
wait_until() {
  deadline=$(( $(date +%s) + ${WAIT_SECONDS:-60} ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out waiting for: $*"
      return 1
    fi
    sleep 0.5
  done
}

# Prints "exit N" after the command's output, so that tests can assert on failures too.
show() {
  "$@" 2>&1
  echo "exit $?"
}

link_exists() {
  ip -n "$1" link show "$2"
}

link_missing() {
  ! ip -n "$1" link show "$2"
}

# The ifindex of a container's eth0, read in its namespace.
eth0_index() {
  trellis exec "$1" cat /sys/class/net/eth0/ifindex
}
