import { createHash, randomBytes } from "node:crypto";
import { status } from "@grpc/grpc-js";
import ipaddr from "ipaddr.js";
import { contains, formatAddress, overlaps, parseAddress, parsePrefix } from "../../libs/ipmath/index.js";
import { ParentKind, type Endpoint, type EndpointSpec, type Network, type NetworkSpec, type Subnet } from "../../libs/proto/gen/trellis/v1/network.js";
import type { IpamCalls } from "../ipam/client.js";
import type { AllocatedSubnet } from "../../libs/proto/gen/trellis/v1/ipam.js";
import type { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { aborted, alreadyExists, failedPrecondition, invalidArgument, notFound, type StatusError } from "../../libs/grpc/status-error.js";
import type { Versioned } from "../../libs/bus/kv.js";
import { traceparentOf } from "../../libs/bus/trace.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import { checkHostSupports } from "./host-support.js";
import { errorCode } from "./intents.js";
import { KeyedLock, lockKey } from "./keyed-lock.js";
import { ensureHostShim, hostShimsOf } from "./host-shim.js";
import { checkHostHasParent, checkParentExistsSomewhere } from "./parent-presence.js";
import { containerNetns, containerRoutes, CONTAINER_IFNAME, dummyParentName } from "./plan.js";
import { finishTakeOver, takeOverAddresses, takeOverLocks } from "./take-over.js";
import { validateName, validateNetworkSpec, validateRuntimeAttach, type ValidatedNetwork } from "./validate.js";
import type { PlannerStore } from "./store.js";

/** A refusal names at most this many of a network's containers. */
const NAMED_CONTAINERS = 10;
const DEFAULT_PAGE_SIZE = 1_000;
const MAX_PAGE_SIZE = 5_000;

/**
 * Turns intents into stored networks and endpoints, asks IPAM for addresses, and writes the keys of desired
 * state that changed: an attach writes its endpoint, its host's key for it and its name, whatever the size of
 * the cluster. Decisions read the in-memory view; intents on different names run concurrently (a lock per
 * name within this replica), and the stores' conditional writes keep replicas from both winning.
 */
export class Planner {
  private readonly locks = new KeyedLock();

  constructor(
    private readonly store: PlannerStore,
    private readonly ipam: IpamCalls,
  ) {}

  /** `intentId`: the intent this is; a network that intent already created is the answer (a replay). */
  createNetwork(spec: NetworkSpec, intentId = ""): Promise<Network> {
    return withSpan("planner.network.create", { "trellis.network": spec.name }, async () => {
      const validated = validateNetworkSpec(spec);
      // The parent's lock keeps two creates on one parent from both passing the mode check.
      return this.locks.run([lockKey.network(spec.name), lockKey.parent(validated.parent.name)], async () => {
        const existing = await this.findNetwork(spec.name);
        if (existing && isCreatedBy(existing.value, intentId)) return existing.value;
        if (existing) throw alreadyExists(`network with name ${spec.name} already exists`);
        const networks = this.store.view.allNetworks();
        checkSharedParent(validated, networks);
        checkSubnetsFree(validated, networks);
        checkParentExistsSomewhere(validated.parent, this.store.view, Date.now());
        const id = randomBytes(16).toString("hex");
        const allocated = await this.ipam.allocateSubnets({
          networkId: id,
          subnets: validated.subnets,
          withGateway: validated.mode === "l2",
          // L3 networks are routed per host: each host takes blocks of the subnet, one route per block.
          hostBlocks: validated.hostBlocks,
        });
        const network = networkOf(id, validated, allocated.subnets, intentId);
        if ((await this.store.createNetwork(network)) === undefined) {
          await this.ipam.releaseSubnets(id);
          const winner = await this.store.readNetwork(spec.name);
          if (winner && isCreatedBy(winner.value, intentId)) return winner.value;
          throw alreadyExists(`network with name ${spec.name} already exists`);
        }
        return network;
      });
    });
  }

  /**
   * Marks the network as being deleted before it looks for containers, so that an attach through another
   * replica either is seen here or sees the mark and undoes itself.
   */
  deleteNetwork(name: string): Promise<void> {
    return withSpan("planner.network.delete", { "trellis.network": name }, () =>
      this.locks.run([lockKey.network(name)], async () => {
        const found = await this.requireNetwork(name);
        refuseIfAttached(found.value, this.store.view.containersOn(found.value.id));
        const marked = await this.store.updateNetwork({ ...found.value, deleting: true }, found.revision);
        if (marked === undefined) throw aborted(`network ${name} changed while it was being deleted; try again`);
        await this.store.view.catchUp();
        const attached = this.store.view.containersOn(found.value.id);
        if (attached.length > 0) {
          await this.store.updateNetwork({ ...found.value, deleting: false }, marked);
          refuseIfAttached(found.value, attached);
        }
        if (!(await this.store.deleteNetwork(name, marked))) throw aborted(`network ${name} changed while it was being deleted; try again`);
        await this.ipam.releaseSubnets(found.value.id);
      }),
    );
  }

  async inspectNetwork(name: string): Promise<Network> {
    const network = (await this.requireNetwork(name)).value;
    return { ...network, hostShims: await hostShimsOf(this.store.buckets.desired, network) };
  }

  async listNetworks(): Promise<Network[]> {
    return this.store.view.allNetworks().sort((a, b) => a.name.localeCompare(b.name));
  }

  /** `intentId`: the intent this is; a container that intent already attached is the answer (a replay). */
  attachEndpoint(spec: EndpointSpec, intentId = ""): Promise<Endpoint> {
    const attributes = { "trellis.network": spec.network, "trellis.container": spec.container, "trellis.host": spec.host };
    return withSpan("planner.endpoint.attach", attributes, () =>
      this.locks.run([lockKey.container(spec.container), ...takeOverLocks(spec)], async () => {
        validateName("container", spec.container);
        validateRuntimeAttach(spec);
        const found = await this.findNetwork(spec.network);
        if (!found || found.value.deleting) {
          throw notFound(`network ${spec.network} not found: create it with trellis network create, or see trellis network ls`);
        }
        const network = found.value;
        const existing = this.store.view.endpoint(spec.container)?.value;
        if (existing && isCreatedBy(existing, intentId)) return spec.takeOver ? finishTakeOver(this.store, existing, spec.takeOver) : this.republished(existing);
        if (existing) throw nameInUse(spec.container, existing);
        const host = await this.requireHost(spec.host);
        // Addresses only: another plugin makes the link, so the host needs neither ipvlan nor the parent.
        if (!spec.ipamOnly) {
          checkHostSupports(host, network);
          checkHostHasParent(host, network, this.store.view);
        }
        checkStaticAddresses(network, spec);
        if (spec.takeOver) return takeOverAddresses(this.store, network, spec, intentId);
        this.checkAddressesFree(network, spec);
        await ensureHostShim(this.store, this.ipam, network, spec.host);
        const endpoint = endpointOf(network, spec, await this.allocateAddresses(network, spec, endpointIdFor(intentId)), intentId);
        const revision = await this.store.createEndpoint(endpoint);
        if (revision === undefined) return this.lostNameRace(network, endpoint, intentId);
        await this.publishUnlessNetworkGone(network, endpoint, revision);
        return endpoint;
      }),
    );
  }

  detachEndpoint(container: string): Promise<void> {
    return withSpan("planner.endpoint.detach", { "trellis.container": container }, () =>
      this.locks.run([lockKey.container(container)], async () => {
        const found = await this.findEndpoint(container);
        if (!found) throw notFound(`no such container: ${container} (see trellis ps)`);
        if (!(await this.store.deleteEndpoint(container, found.revision))) {
          throw aborted(`container ${container} changed while it was being removed; try again`);
        }
        await this.store.unpublishEndpoint(found.value);
        await this.ipam.releaseAddresses(found.value.networkId, found.value.id);
      }),
    );
  }

  /** One page of containers in name order, after the container `after` (empty: from the first). */
  async listEndpoints(network: string, after = "", pageSize = DEFAULT_PAGE_SIZE): Promise<{ endpoints: Endpoint[]; next: string }> {
    const size = Math.min(pageSize || DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE);
    const networkId = network === "" ? undefined : this.store.view.network(network)?.value.id;
    if (network !== "" && !networkId) return { endpoints: [], next: "" };
    const endpoints = this.store.view.endpointsAfter(after, size + 1, networkId);
    return endpoints.length > size ? { endpoints: endpoints.slice(0, size), next: endpoints[size - 1]!.container } : { endpoints, next: "" };
  }

  /** The name of a container's network, as far as the view knows. */
  networkOfContainer(container: string): string | undefined {
    return this.store.view.endpoint(container)?.value.networkName;
  }

  async inspectEndpoint(container: string): Promise<Endpoint> {
    const found = await this.findEndpoint(container);
    if (!found) throw notFound(`no such container: ${container} (see trellis ps)`);
    return found.value;
  }

  /** A replay of an attach publishes again what its first run may not have got to (it failed while publishing). */
  private async republished(endpoint: Endpoint): Promise<Endpoint> {
    await this.store.publishEndpoint(endpoint);
    return endpoint;
  }

  /**
   * Another attach took the name between the view's look and our write. Ours is undone; if the winner is
   * the same intent (a replay through another replica), it is the answer.
   */
  private async lostNameRace(network: Network, mine: Endpoint, intentId: string): Promise<Endpoint> {
    const winner = await this.findEndpoint(mine.container);
    // Another attempt of the same intent has the same endpoint id, and so the very addresses: they are its.
    if (winner && isCreatedBy(winner.value, intentId)) return this.republished(winner.value);
    await this.ipam.releaseAddresses(network.id, mine.id);
    throw winner ? nameInUse(mine.container, winner.value) : alreadyExists(`container name "${mine.container}" is already in use`);
  }

  /**
   * The look at the network after our write, and the publish, at once: the host's agent starts on the container a
   * round trip sooner. Should the network turn out deleted, the undo takes the publish back too. An undo whose
   * unpublish fails leaves keys of an endpoint that no longer is, which the repair pass removes (repair.ts); a crash
   * before the undo leaves the endpoint, as a crash after its create always did, and the intent's retry republishes it.
   */
  private async publishUnlessNetworkGone(network: Network, endpoint: Endpoint, revision: number): Promise<void> {
    const publishing = this.store.publishEndpoint(endpoint);
    try {
      await this.undoIfNetworkGone(network, endpoint, revision);
    } catch (error) {
      await publishing.catch(() => undefined);
      await this.store.unpublishEndpoint(endpoint).catch(() => undefined);
      throw error;
    }
    await publishing;
  }

  /** An attach that raced with the network's delete (through another replica) takes itself back. */
  private async undoIfNetworkGone(network: Network, endpoint: Endpoint, revision: number): Promise<void> {
    const stored = await this.store.readNetwork(network.name);
    if (stored && stored.value.id === network.id && !stored.value.deleting) return;
    await this.store.deleteEndpoint(endpoint.container, revision);
    await this.ipam.releaseAddresses(network.id, endpoint.id);
    throw notFound(`network ${network.name} was deleted while ${endpoint.container} was being attached to it`);
  }

  private async allocateAddresses(network: Network, spec: EndpointSpec, id: string): Promise<{ id: string; addresses: string[] }> {
    const families = [{ ipv6: false, address: spec.ipv4 }, ...(network.ipv6 ? [{ ipv6: true, address: spec.ipv6 }] : [])];
    const addresses: string[] = [];
    try {
      for (const family of families) {
        const allocated = await this.ipam.allocateAddress({ networkId: network.id, endpointId: id, host: spec.host, ipv6: family.ipv6, address: family.address });
        addresses.push(allocated.address);
      }
      return { id, addresses };
    } catch (error) {
      await this.ipam.releaseAddresses(network.id, id);
      if (errorCode(error) === status.ALREADY_EXISTS && (spec.ipv4 || spec.ipv6)) {
        // Taken through another replica, which the view had not seen: name the holder as the view would.
        await this.store.view.catchUp();
        this.checkAddressesFree(network, spec);
      }
      throw error;
    }
  }

  /**
   * IPAM would refuse an address in use too, but by endpoint id and subnet; the user knows containers
   * and networks by name.
   */
  private checkAddressesFree(network: Network, spec: EndpointSpec): void {
    for (const [flag, text] of [["--ip", spec.ipv4], ["--ip6", spec.ipv6]] as const) {
      if (!text) continue;
      const wanted = formatAddress(parseAddress(text));
      const aux = network.subnets.flatMap((s) => Object.entries(s.auxAddresses)).find(([, address]) => address === wanted);
      if (aux) {
        throw alreadyExists(
          `${flag} ${wanted} is aux address ${aux[0]} of network ${network.name}, which no container gets; choose another address, or leave ${flag} out to get a free one`,
        );
      }
      const holder = this.store.view.holderOf(network.id, wanted);
      if (holder) {
        throw alreadyExists(
          `${flag} ${wanted} is already in use by container ${holder} on network ${network.name}; choose another address, or leave ${flag} out to get a free one`,
        );
      }
    }
  }

  /** The view's network, or the bucket's when the view has not seen it (made through another replica just now). */
  private async findNetwork(name: string): Promise<Versioned<Network> | undefined> {
    return this.store.view.network(name) ?? (await this.store.readNetwork(name));
  }

  private async findEndpoint(container: string): Promise<Versioned<Endpoint> | undefined> {
    const known = this.store.view.endpoint(container);
    if (known) return known;
    await this.store.view.catchUp();
    return this.store.view.endpoint(container);
  }

  private async requireNetwork(name: string): Promise<Versioned<Network>> {
    const found = await this.findNetwork(name);
    if (!found) throw notFound(`network ${name} not found`);
    return found;
  }

  private async requireHost(host: string): Promise<HostRecord> {
    let record = this.store.view.host(host);
    if (!record) {
      await this.store.view.catchUp();
      record = this.store.view.host(host);
    }
    if (record) return record;
    const known = this.store.view.hostNames().sort();
    const named = known.length > NAMED_CONTAINERS ? `${known.slice(0, NAMED_CONTAINERS).join(", ")} and ${known.length - NAMED_CONTAINERS} more` : known.join(", ");
    throw notFound(
      `host ${host} is not known: ${known.length > 0 ? `known hosts are ${named}` : "no agent has registered yet"} (start trellis agent --host=${host} there)`,
    );
  }
}

/**
 * An attach's endpoint id follows from its intent id, so that a retry of the intent through another replica
 * (the first one killed after IPAM answered) asks IPAM for the same endpoint and gets the same addresses,
 * instead of leaving the first ones allocated to nothing. Without an intent id, a random one.
 */
function endpointIdFor(intentId: string): string {
  if (intentId === "") return randomBytes(16).toString("hex");
  return createHash("sha256").update(`attach:${intentId}`).digest("hex").slice(0, 32);
}

function networkOf(id: string, validated: ValidatedNetwork, subnets: AllocatedSubnet[], intentId: string): Network {
  const parent = validated.parent.kind === ParentKind.PARENT_KIND_DUMMY ? { ...validated.parent, name: dummyParentName(id) } : validated.parent;
  return {
    id,
    name: validated.name,
    driver: "ipvlan",
    mode: validated.mode,
    flag: validated.flag,
    parent,
    subnets: subnets.map(storedSubnet),
    internal: validated.internal,
    ipv6: validated.ipv6,
    notes: validated.notes,
    createdAt: new Date().toISOString(),
    traceparent: traceparentOf(),
    ipv4BlockPrefix: validated.hostBlocks?.ipv4PrefixLength,
    ipv6BlockPrefix: validated.hostBlocks?.ipv6PrefixLength,
    intentId,
    deleting: false,
    hostShim: validated.hostShim,
    hostShims: [],
  };
}

export function endpointOf(network: Network, spec: EndpointSpec, allocated: { id: string; addresses: string[] }, intentId: string): Endpoint {
  return {
    id: allocated.id,
    networkId: network.id,
    networkName: network.name,
    container: spec.container,
    host: spec.host,
    netns: spec.netnsPath || containerNetns(spec.container, spec.host),
    ifname: spec.ifname || CONTAINER_IFNAME,
    addresses: allocated.addresses,
    routes: containerRoutes(network, allocated.addresses),
    createdAt: new Date().toISOString(),
    traceparent: traceparentOf(),
    intentId,
    ...(spec.ipamOnly ? { ipamOnly: true } : {}),
  };
}

function storedSubnet(subnet: AllocatedSubnet): Subnet {
  const { cidr, gateway, ipv6, pool } = subnet;
  return { cidr, gateway, ipv6, ipRange: pool?.ipRange ?? "", auxAddresses: pool?.auxAddresses ?? {} };
}

export function nameInUse(container: string, holder: Endpoint): StatusError {
  return alreadyExists(
    `container name "${container}" is already in use (network ${holder.networkName}, host ${holder.host}); remove it first (trellis rm ${container}) or choose another name`,
  );
}

function refuseIfAttached(network: Network, containers: string[]): void {
  if (containers.length === 0) return;
  const named = containers.slice(0, NAMED_CONTAINERS).join(", ");
  const more = containers.length > NAMED_CONTAINERS ? ` and ${containers.length - NAMED_CONTAINERS} more` : "";
  throw failedPrecondition(`network ${network.name} has active endpoints: ${named}${more}; remove them first (trellis rm)`);
}

/**
 * The kernel keeps one ipvlan mode and flag per parent: a second network with other settings on the same
 * parent would silently switch the first one's containers over.
 */
function checkSharedParent(validated: ValidatedNetwork, networks: Network[]): void {
  if (validated.parent.kind === ParentKind.PARENT_KIND_DUMMY) return;
  const clash = networks.find(
    (n) => n.parent?.name === validated.parent.name && (n.mode !== validated.mode || n.flag !== validated.flag),
  );
  if (clash) {
    throw failedPrecondition(
      `parent ${validated.parent.name} is already used by network ${clash.name} in ${clash.mode}/${clash.flag}; the kernel allows one ipvlan mode and flag per parent, so use ipvlan_mode=${clash.mode} ipvlan_flag=${clash.flag} or another parent`,
    );
  }
}

/**
 * IPAM refuses an overlap too, but only the planner knows the other network's name, which is what the
 * user needs to hear. Subnets are unique cluster-wide: hosts on one segment would otherwise collide.
 */
function checkSubnetsFree(validated: ValidatedNetwork, networks: Network[]): void {
  for (const wanted of validated.subnets.filter((s) => s.cidr !== "")) {
    const prefix = parsePrefix(wanted.cidr);
    for (const network of networks) {
      const clash = network.subnets.find((s) => overlaps(prefix, parsePrefix(s.cidr)));
      if (clash) {
        throw failedPrecondition(
          `subnet ${wanted.cidr} overlaps subnet ${clash.cidr} of network ${network.name} (parent ${network.parent?.name}): subnets must not overlap across networks; choose another --subnet`,
        );
      }
    }
  }
}

function checkStaticAddresses(network: Network, spec: EndpointSpec): void {
  if (spec.ipv4) {
    if (!ipaddr.IPv4.isValidFourPartDecimal(spec.ipv4)) {
      throw invalidArgument(`invalid --ip "${spec.ipv4}": expected an IPv4 address such as 192.168.1.10`);
    }
    checkInSubnet(network, "--ip", spec.ipv4, false);
  }
  if (spec.ipv6) {
    if (!ipaddr.IPv6.isValid(spec.ipv6)) {
      throw invalidArgument(`invalid --ip6 "${spec.ipv6}": expected an IPv6 address such as 2001:db8::10`);
    }
    if (!network.ipv6) {
      throw invalidArgument(`network ${network.name} has no IPv6 subnet, so --ip6 ${spec.ipv6} cannot be used; create the network with --ipv6`);
    }
    checkInSubnet(network, "--ip6", spec.ipv6, true);
  }
}

function checkInSubnet(network: Network, flag: string, text: string, ipv6: boolean): void {
  const address = parseAddress(text);
  const subnets = network.subnets.filter((s) => s.ipv6 === ipv6).map((s) => s.cidr);
  if (!subnets.some((cidr) => contains(parsePrefix(cidr), address))) {
    throw invalidArgument(
      `${flag} ${text} is outside every ${ipv6 ? "IPv6" : "IPv4"} subnet of network ${network.name} (${subnets.join(", ")}): choose an address in one of them`,
    );
  }
}

/** Whether `intentId` (not empty) made the record: its replay may answer it instead of refusing the name. */
function isCreatedBy(record: { intentId: string }, intentId: string): boolean {
  return intentId !== "" && record.intentId === intentId;
}
