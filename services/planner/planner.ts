import { randomBytes } from "node:crypto";
import ipaddr from "ipaddr.js";
import { contains, formatAddress, overlaps, parseAddress, parseCidr, parsePrefix } from "../../libs/ipmath/index.js";
import { ParentKind, type Endpoint, type EndpointSpec, type Network, type NetworkSpec, type Subnet } from "../../libs/proto/gen/trellis/v1/network.js";
import type { IpamCalls } from "../ipam/client.js";
import type { AllocatedSubnet, ListBlocksResponse } from "../../libs/proto/gen/trellis/v1/ipam.js";
import type { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { alreadyExists, failedPrecondition, invalidArgument, notFound } from "../../libs/grpc/status-error.js";
import { traceparentOf } from "../../libs/bus/trace.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import { checkHostSupports } from "./host-support.js";
import { containerNetns, containerRoutes, CONTAINER_IFNAME, desiredStateFor, dummyParentName, grantedPrefixesOf, hostsOnNetwork } from "./plan.js";
import { validateName, validateNetworkSpec, type ValidatedNetwork } from "./validate.js";
import type { PlannerStore } from "./store.js";

/**
 * Turns intents into stored networks and endpoints, asks IPAM for addresses, and rewrites the desired
 * state of every host concerned. Intents are applied one at a time: the planner is the single writer
 * of desired state, and serialising makes each read-check-write free of races within a replica.
 */
export class Planner {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly store: PlannerStore,
    private readonly ipam: IpamCalls,
  ) {}

  /** `intentId`: the intent this is; a network that intent already created is the answer (a replay). */
  createNetwork(spec: NetworkSpec, intentId = ""): Promise<Network> {
    return this.serialised("planner.network.create", { "trellis.network": spec.name }, async () => {
      const validated = validateNetworkSpec(spec);
      const networks = await this.store.listNetworks();
      const existing = networks.find((n) => n.name === spec.name);
      if (existing && isCreatedBy(existing, intentId)) return existing;
      if (existing) throw alreadyExists(`network with name ${spec.name} already exists`);
      checkSharedParent(validated, networks);
      checkSubnetsFree(validated, networks);
      const id = randomBytes(16).toString("hex");
      const allocated = await this.ipam.allocateSubnets({
        networkId: id,
        subnets: validated.subnets,
        withGateway: validated.mode === "l2",
        // L3 networks are routed per host: each host takes blocks of the subnet, one route per block.
        hostBlocks: validated.hostBlocks,
      });
      const parent =
        validated.parent.kind === ParentKind.PARENT_KIND_DUMMY ? { ...validated.parent, name: dummyParentName(id) } : validated.parent;
      const network: Network = {
        id,
        name: validated.name,
        driver: "ipvlan",
        mode: validated.mode,
        flag: validated.flag,
        parent,
        subnets: allocated.subnets.map(storedSubnet),
        internal: validated.internal,
        ipv6: validated.ipv6,
        notes: validated.notes,
        createdAt: new Date().toISOString(),
        traceparent: traceparentOf(),
        ipv4BlockPrefix: validated.hostBlocks?.ipv4PrefixLength,
        ipv6BlockPrefix: validated.hostBlocks?.ipv6PrefixLength,
        intentId,
      };
      if (!(await this.store.createNetwork(network))) {
        await this.ipam.releaseSubnets(id);
        throw alreadyExists(`network with name ${spec.name} already exists`);
      }
      await this.publishAllHosts();
      return network;
    });
  }

  deleteNetwork(name: string): Promise<void> {
    return this.serialised("planner.network.delete", { "trellis.network": name }, async () => {
      const network = await this.requireNetwork(name);
      const attached = (await this.store.listEndpoints()).filter((e) => e.networkId === network.id);
      if (attached.length > 0) {
        throw failedPrecondition(
          `network ${name} has active endpoints: ${attached.map((e) => e.container).join(", ")}; remove them first (trellis rm)`,
        );
      }
      await this.store.deleteNetwork(name);
      await this.ipam.releaseSubnets(network.id);
      await this.publishAllHosts();
    });
  }

  async inspectNetwork(name: string): Promise<Network> {
    return this.requireNetwork(name);
  }

  async listNetworks(): Promise<Network[]> {
    return (await this.store.listNetworks()).sort((a, b) => a.name.localeCompare(b.name));
  }

  /** `intentId`: the intent this is; a container that intent already attached is the answer (a replay). */
  attachEndpoint(spec: EndpointSpec, intentId = ""): Promise<Endpoint> {
    const attributes = { "trellis.network": spec.network, "trellis.container": spec.container, "trellis.host": spec.host };
    return this.serialised("planner.endpoint.attach", attributes, async () => {
      validateName("container", spec.container);
      const network = await this.store.getNetwork(spec.network);
      if (!network) throw notFound(`network ${spec.network} not found: create it with trellis network create, or see trellis network ls`);
      const existing = await this.store.getEndpoint(spec.container);
      if (existing && isCreatedBy(existing, intentId)) return existing;
      if (existing) {
        throw alreadyExists(
          `container name "${spec.container}" is already in use (network ${existing.networkName}, host ${existing.host}); remove it first (trellis rm ${spec.container}) or choose another name`,
        );
      }
      checkHostSupports(await this.requireHost(spec.host), network);
      checkStaticAddresses(network, spec);
      checkAddressesFree(network, spec, await this.store.listEndpoints());
      const id = randomBytes(16).toString("hex");
      const addresses = await this.allocateAddresses(network, id, spec);
      const endpoint: Endpoint = {
        id,
        networkId: network.id,
        networkName: network.name,
        container: spec.container,
        host: spec.host,
        netns: containerNetns(spec.container, spec.host),
        ifname: CONTAINER_IFNAME,
        addresses,
        routes: containerRoutes(network, addresses),
        createdAt: new Date().toISOString(),
        traceparent: traceparentOf(),
        intentId,
      };
      if (!(await this.store.createEndpoint(endpoint))) {
        await this.ipam.releaseAddresses(network.id, id);
        throw alreadyExists(`container name "${spec.container}" is already in use`);
      }
      await this.publishNetworkHosts(network.id, spec.host);
      return endpoint;
    });
  }

  detachEndpoint(container: string): Promise<void> {
    return this.serialised("planner.endpoint.detach", { "trellis.container": container }, async () => {
      const endpoint = await this.store.getEndpoint(container);
      if (!endpoint) throw notFound(`no such container: ${container} (see trellis ps)`);
      await this.store.deleteEndpoint(container);
      await this.ipam.releaseAddresses(endpoint.networkId, endpoint.id);
      await this.publishNetworkHosts(endpoint.networkId, endpoint.host);
    });
  }

  async listEndpoints(network: string): Promise<Endpoint[]> {
    const endpoints = await this.store.listEndpoints();
    return endpoints.filter((e) => network === "" || e.networkName === network).sort((a, b) => a.container.localeCompare(b.container));
  }

  /** Rewrites one host's desired state from the stored networks and endpoints (a host that just registered). */
  publishHost(host: string): Promise<void> {
    return this.writeDesiredStates([host]);
  }

  /** The endpoint's host, and every host whose containers resolve the names of the endpoint's network. */
  private async publishNetworkHosts(networkId: string, host: string): Promise<void> {
    const endpoints = await this.store.listEndpoints();
    await this.writeDesiredStates([...new Set([host, ...hostsOnNetwork(networkId, endpoints)])]);
  }

  private async publishAllHosts(): Promise<void> {
    await this.writeDesiredStates((await this.store.listHosts()).map((h) => h.host));
  }

  private async writeDesiredStates(hosts: string[]): Promise<void> {
    const [networks, endpoints] = await Promise.all([this.store.listNetworks(), this.store.listEndpoints()]);
    const blocks = await this.routedBlocks(networks);
    await Promise.all(hosts.map((host) => this.store.putDesiredState(desiredStateFor(host, networks, endpoints, grantedPrefixesOf(host, blocks)))));
  }

  /** IPAM's blocks and borrowed addresses of every L3/L3S network: what each host may announce. */
  private routedBlocks(networks: Network[]): Promise<{ networkId: string; blocks: ListBlocksResponse }[]> {
    const routed = networks.filter((network) => network.mode === "l3" || network.mode === "l3s");
    return Promise.all(
      routed.map(async (network) => {
        try {
          return { networkId: network.id, blocks: await this.ipam.listBlocks(network.id) };
        } catch (error) {
          throw new Error(`failed to read the blocks of network ${network.name} from IPAM: ${(error as Error).message}`);
        }
      }),
    );
  }

  private async allocateAddresses(network: Network, endpointId: string, spec: EndpointSpec): Promise<string[]> {
    const families = [{ ipv6: false, address: spec.ipv4 }, ...(network.ipv6 ? [{ ipv6: true, address: spec.ipv6 }] : [])];
    const addresses: string[] = [];
    try {
      for (const family of families) {
        const allocated = await this.ipam.allocateAddress({
          networkId: network.id,
          endpointId,
          host: spec.host,
          ipv6: family.ipv6,
          address: family.address,
        });
        addresses.push(allocated.address);
      }
      return addresses;
    } catch (error) {
      await this.ipam.releaseAddresses(network.id, endpointId);
      throw error;
    }
  }

  private async requireNetwork(name: string): Promise<Network> {
    const network = await this.store.getNetwork(name);
    if (!network) throw notFound(`network ${name} not found`);
    return network;
  }

  private async requireHost(host: string): Promise<HostRecord> {
    const record = await this.store.getHost(host);
    if (record) return record;
    const known = (await this.store.listHosts()).map((h) => h.host).sort();
    throw notFound(
      `host ${host} is not known: ${known.length > 0 ? `known hosts are ${known.join(", ")}` : "no agent has registered yet"} (start trellis agent --host=${host} there)`,
    );
  }

  private serialised<T>(name: string, attributes: Record<string, string>, work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(() => withSpan(name, attributes, work));
    this.queue = run.catch(() => undefined);
    return run;
  }
}

function storedSubnet(subnet: AllocatedSubnet): Subnet {
  const { cidr, gateway, ipv6, pool } = subnet;
  return { cidr, gateway, ipv6, ipRange: pool?.ipRange ?? "", auxAddresses: pool?.auxAddresses ?? {} };
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

/**
 * IPAM would refuse an address in use too, but by endpoint id and subnet; the user knows containers
 * and networks by name.
 */
function checkAddressesFree(network: Network, spec: EndpointSpec, endpoints: Endpoint[]): void {
  for (const [flag, text] of [["--ip", spec.ipv4], ["--ip6", spec.ipv6]] as const) {
    if (!text) continue;
    const wanted = formatAddress(parseAddress(text));
    const aux = network.subnets.flatMap((s) => Object.entries(s.auxAddresses)).find(([, address]) => address === wanted);
    if (aux) {
      throw alreadyExists(
        `${flag} ${wanted} is aux address ${aux[0]} of network ${network.name}, which no container gets; choose another address, or leave ${flag} out to get a free one`,
      );
    }
    const holder = endpoints.find(
      (e) => e.networkId === network.id && e.addresses.some((cidr) => formatAddress(parseCidr(cidr).address) === wanted),
    );
    if (holder) {
      throw alreadyExists(
        `${flag} ${wanted} is already in use by container ${holder.container} on network ${network.name}; choose another address, or leave ${flag} out to get a free one`,
      );
    }
  }
}

/** Whether `intentId` (not empty) made the record: its replay may answer it instead of refusing the name. */
function isCreatedBy(record: { intentId: string }, intentId: string): boolean {
  return intentId !== "" && record.intentId === intentId;
}
