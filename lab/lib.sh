# Helpers for lab scripts: sourced, never run. Lab scripts run in the lab's root namespace with
# `trellis` on PATH; hosts are the namespaces h1, h2, ...

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
