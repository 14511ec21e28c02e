import { randomBytes } from "node:crypto";
import { contains, firstUsable, formatAddress, formatPrefix, parseAddress, parsePrefix, type Prefix } from "../../libs/ipmath/index.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import type { TrellisControlPlane } from "./control-plane.js";
import { createOrJoin, deleteUnlessInUse, isNetworkGone } from "./network-join.js";
import type { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { ADDRESS_SPACES, NETWORK_NAME_OPTION } from "./network-options.js";
import { bare, type PluginState, type PoolRecord } from "./state.js";
import type { Handler } from "./server.js";

/** RequestAddress's option that marks the gateway request Docker makes at every network create. */
const ADDRESS_TYPE = "RequestAddressType";
const GATEWAY_TYPE = "com.docker.network.gateway";

export interface IpamContext {
  state: PluginState;
  trellis: TrellisControlPlane;
  host: string;
  /** Per network: the IPv6 address that came with the last IPv4 request's holding, for Docker's IPv6 request next. */
  pendingIpv6: Map<string, { holder: string; address: string }>;
}

/**
 * The IpamDriver half. A pool is its subnet (the pool id is the CIDR), known before any network: the
 * gateway and --aux-address requests Docker makes before CreateNetwork are answered from it alone (the
 * Trellis network keeps them from containers once made). A container's address is an IPAM-only Trellis
 * container of this host until Join turns it into the container's own link.
 */
export function ipamHandlers(context: IpamContext): Map<string, Handler> {
  return new Map<string, Handler>([
    // No replay: Docker then never asks again after a restart for what it holds, and a request for an address in use is always a conflict.
    ["/IpamDriver.GetCapabilities", async () => ({ RequiresMACAddress: false, RequiresRequestReplay: false })],
    ["/IpamDriver.GetDefaultAddressSpaces", async () => ({ LocalDefaultAddressSpace: ADDRESS_SPACES.local, GlobalDefaultAddressSpace: ADDRESS_SPACES.global })],
    ["/IpamDriver.RequestPool", (body) => requestPool(context, body)],
    ["/IpamDriver.ReleasePool", (body) => releasePool(context, body)],
    ["/IpamDriver.RequestAddress", (body) => requestAddress(context, body)],
    ["/IpamDriver.ReleaseAddress", (body) => releaseAddress(context, body)],
  ]);
}

function prefixOf(text: string, what: string): Prefix {
  try {
    return parsePrefix(text);
  } catch (error) {
    throw new Error(`invalid ${what} "${text}": ${(error as Error).message}`);
  }
}

/** Repeats (a second host, a daemon restart) get the same answer: the pool is its subnet. */
async function requestPool(context: IpamContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const pool = String(body.Pool ?? "");
  if (!pool) {
    throw new Error("Trellis needs the subnet of a Docker network: give --subnet (the same on every host that joins the network), e.g. --subnet=192.168.20.0/24");
  }
  const prefix = prefixOf(pool, "--subnet");
  const v6 = body.V6 === true;
  if ((prefix.family === 6) !== v6) throw new Error(`invalid --subnet ${pool}: it is ${prefix.family === 6 ? "IPv6" : "IPv4"}, but Docker asked for an ${v6 ? "IPv6" : "IPv4"} pool`);
  const cidr = formatPrefix(prefix);
  const subPool = String(body.SubPool ?? "");
  let ipRange = "";
  if (subPool) {
    const range = prefixOf(subPool, "--ip-range");
    if (range.family !== prefix.family || range.length < prefix.length || !contains(prefix, { family: range.family, value: range.network })) {
      throw new Error(`invalid --ip-range ${subPool}: it must lie inside --subnet ${cidr}`);
    }
    ipRange = formatPrefix(range);
  }
  const known = await context.state.pool(cidr);
  const named = String((body.Options as Record<string, string> | undefined)?.[NETWORK_NAME_OPTION] ?? "");
  // For another driver (Docker's ipvlan, macvlan): the pool is a Trellis network of its own, made or joined here.
  if (named) await createOrJoin(context.trellis, ipamNetworkSpec(named, cidr, v6, ipRange));
  const network = named || known?.network;
  await context.state.savePool({ ...known, cidr, v6, ipRange, ...(network ? { network } : {}) });
  return { PoolID: cidr, Pool: cidr, Data: {} };
}

/** `--ipam-opt trellis.network=NAME`: a Trellis network that only hands out addresses; its gateway is Trellis's default. */
function ipamNetworkSpec(name: string, cidr: string, v6: boolean, ipRange: string): NetworkSpec {
  return { name, driver: "ipvlan", subnets: [cidr], gateways: [], internal: false, ipv6: v6, options: {}, ipRanges: ipRange ? [ipRange] : [], auxAddresses: {} };
}

/**
 * The pool's record goes. A network made for another driver is deleted with it when no container is left on it
 * anywhere (another host's pool keeps it otherwise); one of the trellis driver is DeleteNetwork's.
 */
async function releasePool(context: IpamContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const pool = await context.state.pool(String(body.PoolID ?? ""));
  if (!pool) return {};
  if (pool.network && !pool.dockerNetwork) await deleteUnlessInUse(context.trellis, pool.network);
  await context.state.removePool(pool.cidr);
  return {};
}

async function requirePool(context: IpamContext, poolId: string): Promise<PoolRecord> {
  const pool = await context.state.pool(poolId);
  if (!pool) throw new Error(`unknown pool ${poolId}: it was not requested from this plugin (docker network inspect shows the network's pools)`);
  return pool;
}

function withLength(address: string, pool: PoolRecord): string {
  return `${address}/${prefixOf(pool.cidr, "pool").length}`;
}

function checkInPool(address: string, pool: PoolRecord): string {
  let parsed;
  try {
    parsed = parseAddress(address);
  } catch (error) {
    throw new Error(`invalid address "${address}": ${(error as Error).message}`);
  }
  if (!contains(prefixOf(pool.cidr, "pool"), parsed)) throw new Error(`address ${address} is not in the network's subnet ${pool.cidr}`);
  return formatAddress(parsed);
}

async function requestAddress(context: IpamContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const pool = await requirePool(context, String(body.PoolID ?? ""));
  const wanted = body.Address ? checkInPool(String(body.Address), pool) : "";
  const options = (body.Options ?? {}) as Record<string, string>;
  if (options[ADDRESS_TYPE] === GATEWAY_TYPE) return { Address: withLength(await gatewayAnswer(context, pool, wanted), pool), Data: {} };
  // Before CreateNetwork only --aux-address asks for an address: the Trellis network reserves it when made.
  if (!pool.network) {
    if (wanted) return { Address: withLength(wanted, pool), Data: {} };
    throw new Error(`pool ${pool.cidr} belongs to no Trellis network yet: create the Docker network with -d trellis, or give --ipam-opt trellis.network=NAME`);
  }
  const address = await holdAddress(context, pool, wanted);
  return { Address: address, Data: {} };
}

/**
 * A network made for another driver has its gateway already: a --gateway that differs is refused. Otherwise the
 * gateway asked for, or the one Trellis gives by default.
 */
async function gatewayAnswer(context: IpamContext, pool: PoolRecord, wanted: string): Promise<string> {
  if (!pool.network || pool.dockerNetwork) return wanted || gatewayOf(pool);
  const subnet = (await context.trellis.inspectNetwork(pool.network)).subnets.find((candidate) => candidate.cidr === pool.cidr);
  const gateway = subnet?.gateway || gatewayOf(pool);
  if (wanted && wanted !== gateway) throw new Error(`Trellis network ${pool.network} has gateway ${gateway} on ${pool.cidr}: give --gateway=${gateway}, or leave --gateway out`);
  return gateway;
}

/** Trellis's gateway when none is given: the subnet's first usable address (the planner's default too). */
function gatewayOf(pool: PoolRecord): string {
  const prefix = prefixOf(pool.cidr, "pool");
  return formatAddress({ family: prefix.family, value: firstUsable(prefix) });
}

/**
 * A new IPAM-only Trellis container of this host holds the address until Join (the planner refuses an address in
 * use, naming its holder). On a dual-stack network its other family's address comes with it; Docker's request
 * for that family, which follows, gets it.
 */
async function holdAddress(context: IpamContext, pool: PoolRecord, wanted: string): Promise<string> {
  const network = pool.network!;
  const ipv6 = pool.v6;
  if (ipv6) {
    const paired = context.pendingIpv6.get(network);
    context.pendingIpv6.delete(network);
    if (paired && (!wanted || bare(paired.address) === wanted)) return paired.address;
    // --ip6 with an automatic or static IPv4 address: that holding is made again with the IPv6 address asked for.
    if (paired) return rehold(context, pool, paired, wanted);
  }
  const holder = `docker-ipam-${randomBytes(6).toString("hex")}`;
  const endpoint = await attachHolder(context, pool, holder, ipv6 ? "" : wanted, ipv6 ? wanted : "");
  await context.state.saveHolding(network, { holder, addresses: endpoint.addresses });
  const other = endpoint.addresses.find((address) => address.includes(":") !== ipv6);
  if (!ipv6 && other) context.pendingIpv6.set(network, { holder, address: other });
  return endpoint.addresses.find((address) => address.includes(":") === ipv6)!;
}

async function rehold(context: IpamContext, pool: PoolRecord, paired: { holder: string; address: string }, ipv6: string): Promise<string> {
  const network = pool.network!;
  const holding = await context.state.holding(network, bare(paired.address));
  const ipv4 = bare(holding?.addresses.find((address) => !address.includes(":")) ?? "");
  await context.trellis.detach(paired.holder);
  if (holding) await context.state.removeHolding(network, holding);
  const endpoint = await attachHolder(context, pool, paired.holder, ipv4, ipv6);
  await context.state.saveHolding(network, { holder: paired.holder, addresses: endpoint.addresses });
  return endpoint.addresses.find((address) => address.includes(":"))!;
}

/** The network is made again from this host's record when another host's `docker network rm` deleted it meanwhile. */
async function attachHolder(context: IpamContext, pool: PoolRecord, holder: string, ipv4: string, ipv6: string): Promise<Endpoint> {
  const network = pool.network!;
  const spec = { network, container: holder, host: context.host, ipv4, ipv6, ipamOnly: true };
  try {
    return await context.trellis.attach(spec);
  } catch (error) {
    const record = pool.dockerNetwork ? await context.state.network(pool.dockerNetwork) : undefined;
    if (!record || !isNetworkGone(error, network)) throw error;
    await createOrJoin(context.trellis, record.spec);
    return context.trellis.attach(spec);
  }
}

/** Releases what this host holds for the address; an address it does not hold (a gateway, an aux address) is nothing to do. */
async function releaseAddress(context: IpamContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const pool = await context.state.pool(String(body.PoolID ?? ""));
  if (!pool?.network) return {};
  const holding = await context.state.holding(pool.network, bare(String(body.Address ?? "")));
  if (!holding) return {};
  await context.trellis.detach(holding.holder);
  await context.state.removeHolding(pool.network, holding);
  return {};
}
