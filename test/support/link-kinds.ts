import { execFileSync } from "node:child_process";
import { NEEDED_LINK_KINDS } from "../../services/link-agent/link-kinds.js";

/**
 * Makes network namespace `namespace` (left made, with nothing but lo, for the test to use and remove)
 * and tries there with iproute2 to make a link of each kind the agent needs, ipvlan and vlan on a veth:
 * an oracle for the agent's own check that shares none of its code. Returns the kinds the kernel lacks.
 */
export function makeNamespaceFindingMissingKinds(namespace: string): string[] {
  const ip = (...args: string[]) => execFileSync("ip", ["-n", namespace, ...args], { stdio: "pipe" });
  execFileSync("ip", ["netns", "add", namespace]);
  ip("link", "add", "probe0", "type", "veth", "peer", "name", "probe0p");
  const attempts: Record<string, string[]> = {
    ipvlan: ["link", "add", "link", "probe0", "name", "probe1", "type", "ipvlan"],
    vlan: ["link", "add", "link", "probe0", "name", "probe0.20", "type", "vlan", "id", "20"],
    dummy: ["link", "add", "probe2", "type", "dummy"],
  };
  const missing = NEEDED_LINK_KINDS.filter((kind) => !madeBy(() => ip(...attempts[kind]!)));
  // Deleting the veth takes the ipvlan and the vlan on it along.
  ip("link", "del", "probe0");
  if (!missing.includes("dummy")) ip("link", "del", "probe2");
  return missing;
}

/** iproute2 says "Unknown device type" when the kernel answers EOPNOTSUPP; any other failure is the test's. */
function madeBy(attempt: () => unknown): boolean {
  try {
    attempt();
    return true;
  } catch (error) {
    if (String((error as { stderr?: unknown }).stderr).includes("Unknown device type")) return false;
    throw error;
  }
}
