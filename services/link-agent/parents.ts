import { ParentKind, type Network } from "../../libs/proto/gen/trellis/v1/network.js";
import type { Link, NetlinkHandle } from "../../libs/netlink/index.js";

/**
 * Links the agent creates carry this alias, so that after any restart it can tell them from the
 * operator's own links (principle 2): only these are ever deleted.
 */
export const OWNED_LINK_ALIAS = "trellis:owned";

export type ParentResult = { index: number } | { error: string };

/**
 * Makes sure a network's parent exists and is up on this host: an existing interface is used as it is,
 * `base.vlan` and dummy parents are created when missing.
 */
export async function ensureParent(host: string, nl: NetlinkHandle, links: Link[], network: Network): Promise<ParentResult> {
  const parent = network.parent!;
  const found = links.find((link) => link.name === parent.name);
  try {
    if (found) return await usable(host, nl, found);
    switch (parent.kind) {
      case ParentKind.PARENT_KIND_DUMMY:
        return { index: await createOwned(nl, () => nl.createDummy(parent.name)) };
      case ParentKind.PARENT_KIND_VLAN: {
        const base = links.find((link) => link.name === parent.base);
        if (!base) {
          return { error: `failed to create parent ${parent.name}: base interface ${parent.base} does not exist on host ${host}` };
        }
        return { index: await createOwned(nl, () => nl.createVlan(parent.name, base.index, parent.vlanId)) };
      }
      default:
        return {
          error: `parent interface ${parent.name} does not exist on host ${host}: create it first, or name a VLAN sub-interface as <interface>.<vlan id> to have it created`,
        };
    }
  } catch (error) {
    return { error: (error as Error).message };
  }
}

async function usable(host: string, nl: NetlinkHandle, link: Link): Promise<ParentResult> {
  if (link.up) return { index: link.index };
  if (link.alias === OWNED_LINK_ALIAS) {
    await nl.setUp(link.index);
    return { index: link.index };
  }
  return { error: `parent interface ${link.name} is down on host ${host}: bring it up (ip link set ${link.name} up)` };
}

async function createOwned(nl: NetlinkHandle, create: () => Promise<Link>): Promise<number> {
  const link = await create();
  await nl.setAlias(link.index, OWNED_LINK_ALIAS);
  await nl.setUp(link.index);
  return link.index;
}

/** Deletes links this agent created that no network on this host uses any more. */
export async function removeUnusedParents(nl: NetlinkHandle, links: Link[], networks: Network[]): Promise<void> {
  const used = new Set(networks.map((network) => network.parent?.name));
  for (const link of links) {
    if (link.alias === OWNED_LINK_ALIAS && !used.has(link.name)) await nl.deleteLink(link.index);
  }
}
