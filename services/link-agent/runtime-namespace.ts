import { isAbsolute } from "node:path";
import { namespaceExists, openNetlink } from "../../libs/netlink/index.js";

/**
 * A container runtime's namespace (CNI_NETNS) is named by its absolute path; the agent's own are names under
 * /run/netns. The runtime's is the runtime's: the agent works inside it but never creates nor deletes it.
 */
export function isRuntimeNamespace(netns: string): boolean {
  return isAbsolute(netns);
}

/** Refuses to go on in a runtime's namespace that is not there: making one would hide the runtime's mistake. */
export function requireRuntimeNamespace(netns: string): void {
  if (!namespaceExists(netns)) {
    throw new Error(`the container runtime's network namespace ${netns} does not exist (the container is gone, or CNI_NETNS is wrong)`);
  }
}

/**
 * Removing an attachment in a runtime's namespace takes away its link (and with it its addresses and routes),
 * nothing else; a namespace or link already gone is fine.
 */
export async function removeRuntimeLink(netns: string, ifname: string): Promise<void> {
  if (!namespaceExists(netns)) return;
  const inside = await openNetlink(netns);
  try {
    const link = await inside.getLink(ifname);
    if (link) await inside.deleteLink(link.index);
  } finally {
    inside.close();
  }
}
