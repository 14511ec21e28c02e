import { unsupportedLinkKinds } from "../../libs/netlink/index.js";

/** What the agent creates: an ipvlan per container, and 802.1Q and dummy parents. */
export const NEEDED_LINK_KINDS: readonly string[] = ["ipvlan", "vlan", "dummy"];

/**
 * Which of `kinds` the kernel lacks, or undefined when that could not be found out (logged): the planner
 * refuses hosts on this report, and a doubt must not keep containers off a host.
 */
export async function findMissingLinkKinds(kinds: readonly string[]): Promise<string[] | undefined> {
  try {
    return await unsupportedLinkKinds(kinds);
  } catch (error) {
    console.error(`failed to find out which link kinds the kernel lacks: ${(error as Error).message}`);
    return undefined;
  }
}
