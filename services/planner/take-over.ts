import { nameKey } from "../../libs/bus/subjects.js";
import type { Versioned } from "../../libs/bus/kv.js";
import { aborted, failedPrecondition, invalidArgument, notFound } from "../../libs/grpc/status-error.js";
import { formatAddress, parseAddress, parseCidr } from "../../libs/ipmath/index.js";
import type { Endpoint, EndpointSpec, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { endpointOf, nameInUse } from "./planner.js";
import type { PlannerStore } from "./store.js";
import { lockKey } from "./keyed-lock.js";

// An attach with take_over: the container's endpoint gets the addresses of an IPAM-only container of the same
// network and host, which goes (the Docker plugin's IPAM holds a container's address so until its link is made).
// The new endpoint keeps the holder's endpoint id, under which IPAM has the addresses: IPAM is not asked at all,
// so the addresses are never free for another attach, and a failure half-way leaves them held by one or the other.

/** The lock keys an attach takes beyond its container's: the holder's too, so that no detach of it runs meanwhile. */
export function takeOverLocks(spec: EndpointSpec): string[] {
  return spec.takeOver ? [lockKey.container(spec.takeOver)] : [];
}

/**
 * The endpoint written first, then the holder's record deleted (only as it was read: a detach through another
 * replica in between wins, and ours is undone). At every moment one of the two records names the addresses, so a
 * network delete still sees a container on it. The desired key is the same (one id): writing the endpoint's
 * rewrites the holder's, and its host's agent makes the link; only the holder's name goes.
 */
export async function takeOverAddresses(store: PlannerStore, network: Network, spec: EndpointSpec, intentId: string): Promise<Endpoint> {
  const holder = await requireHolder(store, network, spec);
  const endpoint = endpointOf(network, spec, { id: holder.value.id, addresses: holder.value.addresses }, intentId);
  const revision = await store.createEndpoint(endpoint);
  if (revision === undefined) {
    const winner = store.view.endpoint(spec.container)?.value;
    throw winner ? nameInUse(spec.container, winner) : aborted(`container ${spec.container} changed while it was taking over the addresses of ${holder.value.container}; try again`);
  }
  if (!(await store.deleteEndpoint(holder.value.container, holder.revision))) {
    await store.deleteEndpoint(endpoint.container, revision);
    throw aborted(`IPAM-only container ${holder.value.container} changed while ${spec.container} was taking over its addresses; try again`);
  }
  return publishTakenOver(store, endpoint, holder.value);
}

/**
 * A replay of a take-over whose first run stopped after writing the endpoint: the holder's record, if it is still
 * there with the same id, goes now, and the endpoint is published again.
 */
export async function finishTakeOver(store: PlannerStore, endpoint: Endpoint, holderName: string): Promise<Endpoint> {
  const holder = store.view.endpoint(holderName);
  if (holder && holder.value.id === endpoint.id) await store.deleteEndpoint(holderName, holder.revision);
  return publishTakenOver(store, endpoint, holder?.value);
}

async function publishTakenOver(store: PlannerStore, endpoint: Endpoint, holder: Endpoint | undefined): Promise<Endpoint> {
  await store.publishEndpoint(endpoint);
  if (holder) await store.repairKey("names", nameKey(holder.networkId, holder.container), undefined);
  return endpoint;
}

/** The holder as the spec names it: IPAM-only, on the network and host of the attach, with the addresses asked for. */
async function requireHolder(store: PlannerStore, network: Network, spec: EndpointSpec): Promise<Versioned<Endpoint>> {
  const name = spec.takeOver!;
  if (spec.ipamOnly) throw invalidArgument(`invalid attach: take_over ${name} gives ${spec.container} the addresses of an IPAM-only container for a link, so it cannot be IPAM-only itself`);
  let holder = store.view.endpoint(name);
  if (!holder) {
    await store.view.catchUp();
    holder = store.view.endpoint(name);
  }
  if (!holder) throw notFound(`no container ${name} to take the addresses of on network ${network.name} (see trellis ps --net=${network.name}); attach without take_over`);
  const held = holder.value;
  const where = `${held.networkName} on host ${held.host}`;
  if (!held.ipamOnly) throw failedPrecondition(`container ${name} (network ${where}) has a link of its own: only an IPAM-only container's addresses can be taken over`);
  if (held.networkId !== network.id || held.host !== spec.host) {
    throw failedPrecondition(`container ${name} is on network ${where}, not ${network.name} on host ${spec.host}: only an IPAM-only container of the same network and host can be taken over`);
  }
  const addresses = held.addresses.map((cidr) => formatAddress(parseCidr(cidr).address));
  for (const [flag, text] of [["--ip", spec.ipv4], ["--ip6", spec.ipv6]] as const) {
    if (text && !addresses.includes(formatAddress(parseAddress(text)))) {
      throw failedPrecondition(`${flag} ${text} is not an address of ${name} (${addresses.join(", ")}): take over gives its addresses as they are; leave ${flag} out, or give one of them`);
    }
  }
  return holder;
}
