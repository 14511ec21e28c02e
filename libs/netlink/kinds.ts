// Link kinds as the kernel names them (IFLA_INFO_KIND), and what to load for each. No I/O: the planner,
// which never talks to a kernel, uses this too.

/** The kernel module that registers a link kind; only 802.1Q's differs from the kind's name. */
export function moduleOf(kind: string): string {
  return kind === "vlan" ? "8021q" : kind;
}
