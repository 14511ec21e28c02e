import { ParentKind, type Network } from "../../libs/proto/gen/trellis/v1/network.js";
import type { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { failedPrecondition } from "../../libs/grpc/status-error.js";
import { moduleOf } from "../../libs/netlink/kinds.js";

interface NeededKind {
  kind: string;
  /** What the kernel has no support for, as the refusal says it. */
  support: string;
}

/**
 * Refuses a container on a host whose agent reported, in its last heartbeat, that its kernel lacks a link
 * kind the container needs. Only the placement is refused: a network spans every host, and the hosts that
 * have the kinds can use it. A host that reports nothing (an agent older than the report) is not refused.
 */
export function checkHostSupports(host: HostRecord, network: Network): void {
  const lacking = neededKinds(network).filter(({ kind }) => host.missingLinkKinds.includes(kind));
  if (lacking.length === 0) return;
  const remedy = `modprobe ${lacking.map(({ kind }) => moduleOf(kind)).join(" ")}, or choose another host`;
  if (lacking.length === 1 && lacking[0]!.kind === "ipvlan") {
    throw failedPrecondition(`host ${host.host} cannot run ipvlan containers: its kernel has no ipvlan support (${remedy})`);
  }
  throw failedPrecondition(
    `host ${host.host} cannot run containers of network ${network.name}: its kernel has no ${lacking.map(({ support }) => support).join(", nor ")} (${remedy})`,
  );
}

/** ipvlan for the container's eth0, and the kind of the parent the agent creates for its network, if any. */
function neededKinds(network: Network): NeededKind[] {
  const needed = [{ kind: "ipvlan", support: "ipvlan support" }];
  const parent = network.parent;
  if (parent?.kind === ParentKind.PARENT_KIND_VLAN) {
    needed.push({ kind: "vlan", support: `802.1Q support for the network's parent ${parent.name}, a VLAN sub-interface` });
  }
  if (parent?.kind === ParentKind.PARENT_KIND_DUMMY) {
    const why = network.internal ? "is --internal" : "has no -o parent";
    needed.push({ kind: "dummy", support: `dummy support for the network's parent, a dummy link as the network ${why}` });
  }
  return needed;
}
