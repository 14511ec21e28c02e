import { ParentKind, type Network, type Parent } from "../../libs/proto/gen/trellis/v1/network.js";
import type { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { hostStaleAfterMs } from "../../libs/bus/subjects.js";
import { failedPrecondition } from "../../libs/grpc/status-error.js";

/** How many hosts a refusal names; the rest are counted. */
const NAMED_HOSTS = 3;

/** What the planner knows of hosts' interfaces (PlannerView). */
export interface InterfaceIndex {
  hostsWith(interfaceName: string): string[];
  host(name: string): HostRecord | undefined;
  hostNames(): string[];
}

/** The interface a parent needs on a host: itself, or the base of a VLAN sub-interface; none for a dummy. */
export function neededInterface(parent: Parent | undefined): string | undefined {
  if (parent?.kind === ParentKind.PARENT_KIND_EXISTING) return parent.name;
  if (parent?.kind === ParentKind.PARENT_KIND_VLAN) return parent.base;
  return undefined;
}

export function isLive(record: HostRecord, now: number): boolean {
  return now - Date.parse(record.heartbeatAt) <= hostStaleAfterMs(record.heartbeatIntervalMs);
}

/**
 * Refuses a parent that no live host has, as the reference refuses a missing parent. Hosts that report no
 * interfaces (no agent yet, or one older than the report) tell nothing, so with none reporting nothing is refused.
 */
export function checkParentExistsSomewhere(parent: Parent, index: InterfaceIndex, now: number): void {
  const needed = neededInterface(parent);
  if (!needed) return;
  if (index.hostsWith(needed).some((host) => { const record = index.host(host); return record !== undefined && isLive(record, now); })) return;
  const reporting = index.hostNames().flatMap((name) => {
    const record = index.host(name);
    return record && record.interfaces.length > 0 && isLive(record, now) ? [record] : [];
  });
  if (reporting.length === 0) return;
  const what = parent.kind === ParentKind.PARENT_KIND_VLAN ? `interface ${needed}, the base of parent ${parent.name},` : `parent interface ${needed}`;
  throw failedPrecondition(
    `${what} exists on no live host: ${describeHosts(reporting)}; create it there first, or choose an interface they have with -o parent=`,
  );
}

/** Refuses, before anything is written, a container on a host that reported its interfaces without the parent's. */
export function checkHostHasParent(host: HostRecord, network: Network, index: InterfaceIndex): void {
  const needed = neededInterface(network.parent);
  if (!needed || host.interfaces.length === 0 || host.interfaces.includes(needed)) return;
  const others = index.hostsWith(needed).filter((name) => name !== host.host).sort();
  const remedy = others.length > 0 ? `choose a host that has it: ${sample(others)}` : `create ${needed} on host ${host.host} first`;
  throw failedPrecondition(
    `host ${host.host} has no interface ${needed}, the parent of network ${network.name} (its interfaces: ${host.interfaces.join(", ")}); ${remedy}`,
  );
}

/** "h1 has eth0, lo; h2 has eth0 (and 3 more hosts)": hosts with the same interfaces are named together. */
function describeHosts(hosts: HostRecord[]): string {
  const groups = new Map<string, string[]>();
  for (const host of [...hosts].sort((a, b) => a.host.localeCompare(b.host))) {
    const interfaces = [...host.interfaces].sort().join(", ");
    groups.set(interfaces, [...(groups.get(interfaces) ?? []), host.host]);
  }
  const described = [...groups].slice(0, NAMED_HOSTS).map(([interfaces, names]) => `${sample(names)} ${names.length === 1 ? "has" : "have"} ${interfaces}`);
  const left = [...groups].slice(NAMED_HOSTS).reduce((count, [, names]) => count + names.length, 0);
  return described.join("; ") + (left > 0 ? ` (and ${left} more hosts)` : "");
}

function sample(names: string[]): string {
  const named = names.slice(0, NAMED_HOSTS).join(", ");
  return names.length > NAMED_HOSTS ? `${named} and ${names.length - NAMED_HOSTS} more` : named;
}
