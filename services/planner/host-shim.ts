import type { KV } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { getValue, isExistsError, listValues } from "../../libs/bus/kv.js";
import { hostShimKey, networkHostShimsFilter } from "../../libs/bus/subjects.js";
import { HostShim, type Network } from "../../libs/proto/gen/trellis/v1/network.js";
import type { IpamCalls } from "../ipam/client.js";
import { hostShimEndpointId } from "../ipam/host-shim-id.js";
import { networkCodec, type PlannerStore } from "./store.js";

// A host's shim on a network with -o host_shim=true: an address of the network for the host itself, held in
// IPAM like a container's, and one key of desired state that the host's agent turns into an ipvlan interface
// in the host's namespace (services/link-agent/host-shim.ts). It is made lazily, by the host's first attach
// to the network, and kept until the network is removed: the host's address on the network stays the same
// while containers come and go, and no detach has to race an attach over it. A network's removal releases its
// addresses with the subnets; the agents drop the interface as the network goes, and the repair pass deletes
// the keys left behind (isOrphanHostShim).

export const hostShimCodec = codecOf(HostShim);

/**
 * Makes sure `host` has its shim on `network`: one read of one key when it has (every attach but a host's first
 * on the network), and otherwise IPAM's addresses and a create-only write. Two attaches racing here get the
 * same addresses (one endpoint id per network and host), so the one whose write loses has nothing to undo.
 */
export async function ensureHostShim(store: PlannerStore, ipam: IpamCalls, network: Network, host: string): Promise<void> {
  if (!network.hostShim) return;
  const { desired } = store.buckets;
  const key = hostShimKey(host, network.id);
  if (await getValue(desired, hostShimCodec, key)) return;
  const shim: HostShim = {
    networkId: network.id,
    networkName: network.name,
    host,
    addresses: await shimAddresses(ipam, network, host),
    createdAt: new Date().toISOString(),
  };
  try {
    await desired.create(key, store.sealed(hostShimCodec, shim));
  } catch (error) {
    if (!isExistsError(error)) throw new Error(`failed to record the host shim of ${host} on network ${network.name}: ${(error as Error).message}`);
  }
}

async function shimAddresses(ipam: IpamCalls, network: Network, host: string): Promise<string[]> {
  const endpointId = hostShimEndpointId(network.id, host);
  const addresses: string[] = [];
  for (const ipv6 of network.ipv6 ? [false, true] : [false]) {
    try {
      addresses.push((await ipam.allocateAddress({ networkId: network.id, endpointId, host, ipv6, address: "" })).address);
    } catch (error) {
      throw Object.assign(error as Error, {
        message: `failed to give host ${host} its shim address on network ${network.name} (host_shim=true): ${(error as Error).message}`,
      });
    }
  }
  return addresses;
}

/** Every host's shim on the network, by host name: read for `trellis network inspect`, never on an intent's path. */
export async function hostShimsOf(desired: KV, network: Network): Promise<HostShim[]> {
  if (!network.hostShim) return [];
  const shims = await listValues(desired, hostShimCodec, networkHostShimsFilter(network.id));
  return shims.map((shim) => ({ ...shim, signature: undefined })).sort((a, b) => a.host.localeCompare(b.host));
}

/**
 * Repair: whether a stored shim key is left from a network that is gone (removed, or removed and made again
 * under its name), as the network's own key says now.
 */
export async function isOrphanHostShim(networks: KV, bytes: Uint8Array): Promise<boolean> {
  let shim: HostShim;
  try {
    shim = hostShimCodec.decode(bytes);
  } catch {
    return true;
  }
  const current = await getValue(networks, networkCodec, shim.networkName);
  return current?.value.id !== shim.networkId;
}
