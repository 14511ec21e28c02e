import { randomBytes } from "node:crypto";
import type { TrellisControlPlane } from "./control-plane.js";
import { createOrJoin, deleteUnlessInUse } from "./network-join.js";
import { networkSpecOf, type DockerNetworkRequest } from "./network-options.js";
import type { SandboxJoins } from "./sandbox-join.js";
import type { Handler } from "./server.js";
import { bare, type EndpointRecord, type PluginState, type PoolRecord } from "./state.js";


export interface DriverContext {
  state: PluginState;
  trellis: TrellisControlPlane;
  host: string;
  joins: SandboxJoins;
}

/**
 * The NetworkDriver half. Docker's scope for it is local (there is no cluster store any more); the Trellis
 * network is cluster-wide, so each host's `docker network create` creates or joins it. The agent makes the
 * container's link directly in Docker's sandbox (the CNI plugin's way): Join names no interface for Docker to move.
 */
export function driverHandlers(context: DriverContext): Map<string, Handler> {
  return new Map<string, Handler>([
    ["/NetworkDriver.GetCapabilities", async () => ({ Scope: "local", ConnectivityScope: "global" })],
    ["/NetworkDriver.CreateNetwork", (body) => createNetwork(context, body)],
    ["/NetworkDriver.DeleteNetwork", (body) => deleteNetwork(context, body)],
    ["/NetworkDriver.CreateEndpoint", (body) => createEndpoint(context, body)],
    ["/NetworkDriver.EndpointOperInfo", async () => ({ Value: {} })],
    ["/NetworkDriver.DeleteEndpoint", (body) => deleteEndpoint(context, body)],
    ["/NetworkDriver.Join", (body) => join(context, body)],
    ["/NetworkDriver.Leave", (body) => leave(context, body)],
    ["/NetworkDriver.DiscoverNew", async () => ({})],
    ["/NetworkDriver.DiscoverDelete", async () => ({})],
    ["/NetworkDriver.ProgramExternalConnectivity", async () => ({})],
    ["/NetworkDriver.RevokeExternalConnectivity", async () => ({})],
    ["/NetworkDriver.AllocateNetwork", async () => ({ Err: "the trellis driver is local-scoped: swarm networks are not supported" })],
    ["/NetworkDriver.FreeNetwork", async () => ({})],
  ]);
}

/** Idempotent: Docker may create again what it already created (a repeat after a daemon restart). */
async function createNetwork(context: DriverContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const dockerId = String(body.NetworkID ?? "");
  const request = body as DockerNetworkRequest;
  const pooled = [...(request.IPv4Data ?? []), ...(request.IPv6Data ?? [])].map((data) => data.Pool ?? "").filter(Boolean);
  const pools = new Map<string, PoolRecord>();
  for (const cidr of pooled) {
    const pool = await context.state.pool(cidr);
    if (pool) pools.set(cidr, pool);
  }
  const spec = networkSpecOf(request, pools);
  const network = await createOrJoin(context.trellis, spec);
  await context.state.saveNetwork({ dockerId, network: network.name, spec, pools: pooled });
  for (const pool of pools.values()) await context.state.savePool({ ...pool, network: network.name, dockerNetwork: dockerId });
  return {};
}

/**
 * Deletes the Trellis network when no container is left on it anywhere; while other hosts' containers use it, it
 * stays for them (their `docker network rm` deletes it last). Another host's Docker network whose Trellis network
 * went makes it again at its next container.
 */
async function deleteNetwork(context: DriverContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const dockerId = String(body.NetworkID ?? "");
  const record = await context.state.network(dockerId);
  if (!record) return {};
  await deleteUnlessInUse(context.trellis, record.network);
  await context.state.removeNetwork(dockerId);
  return {};
}

/**
 * The endpoint's Trellis container name until its sandbox exists: Docker 20.10 tells a driver no container name.
 * SandboxJoins then asks dockerd and attaches under the Docker name, keeping this one if another host has that name.
 */
function trellisNameOf(dockerId: string): string {
  return `docker-${dockerId.slice(0, 12)}`;
}

/** Docker's IPAM has chosen the addresses (ours: held by an IPAM-only container); the interface stays as Docker gave it. */
async function createEndpoint(context: DriverContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const dockerId = String(body.EndpointID ?? "");
  const networkDockerId = String(body.NetworkID ?? "");
  const network = await context.state.network(networkDockerId);
  if (!network) throw new Error(`unknown network ${networkDockerId}: it was not created through this plugin on this host (docker network create -d trellis)`);
  const iface = (body.Interface ?? {}) as { Address?: string; AddressIPv6?: string };
  const addresses = [iface.Address, iface.AddressIPv6].filter((address): address is string => Boolean(address));
  if (addresses.length === 0) throw new Error(`endpoint ${dockerId} has no address: the trellis driver needs --ipam-driver=trellis`);
  for (const address of addresses) {
    if (!(await context.state.holding(network.network, bare(address)))) {
      throw new Error(`address ${address} was not handed out by Trellis on this host: create the network with --ipam-driver=trellis`);
    }
  }
  const known = await context.state.endpoint(dockerId);
  const record: EndpointRecord = known ?? { dockerId, networkDockerId, network: network.network, container: trellisNameOf(dockerId), addresses };
  await context.state.saveEndpoint(record);
  return {};
}

async function deleteEndpoint(context: DriverContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const dockerId = String(body.EndpointID ?? "");
  const record = await context.state.endpoint(dockerId);
  if (record?.sandbox) await context.state.removeSandboxEndpoint(record.sandbox, dockerId);
  await context.state.removeEndpoint(dockerId);
  return {};
}

/**
 * The agent keys its work by namespace, so a container has one Trellis network: a second one (`docker network
 * connect`) is refused here, where Docker still reads the answer, rather than by the agent once Join has answered.
 * A record whose endpoint is gone (a plugin stopped before DeleteEndpoint) holds nothing.
 */
async function refuseSecondNetwork(context: DriverContext, sandbox: string, dockerId: string): Promise<void> {
  const holderId = await context.state.sandboxEndpoint(sandbox);
  if (!holderId || holderId === dockerId) return;
  const holder = await context.state.endpoint(holderId);
  if (holder?.sandbox !== sandbox) return;
  throw new Error(
    `failed to join: the container is on Trellis network ${holder.network} already (Docker endpoint ${holderId.slice(0, 12)}), and a container has one Trellis network for now: disconnect it from that network first, or connect this one through another driver`,
  );
}

async function requireEndpoint(context: DriverContext, body: Record<string, any>): Promise<EndpointRecord> {
  const record = await context.state.endpoint(String(body.EndpointID ?? ""));
  if (!record) throw new Error(`unknown endpoint ${String(body.EndpointID)}: it was not created through this plugin on this host`);
  return record;
}

/**
 * Answers at once: the sandbox's namespace does not exist yet (SandboxJoins). No gateway goes back, since the
 * agent sets the routes (Docker would add its default route a second time), and no gateway service
 * (docker_gwbridge) is wanted.
 */
async function join(context: DriverContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  const record = await requireEndpoint(context, body);
  const sandbox = String(body.SandboxKey ?? "");
  if (!sandbox) throw new Error("Join without a SandboxKey: Docker names the container's network namespace there");
  await refuseSecondNetwork(context, sandbox, record.dockerId);
  await context.state.saveSandboxEndpoint(sandbox, record.dockerId);
  if (!record.endpointId) {
    const joining = { ...record, sandbox, joinId: randomBytes(8).toString("hex") };
    await context.state.saveEndpoint(joining);
    context.joins.start(joining, sandbox);
  }
  return { DisableGatewayService: true };
}

/** The container's link goes before Docker deletes its sandbox; the address stays recorded until ReleaseAddress. */
async function leave(context: DriverContext, body: Record<string, any>): Promise<Record<string, unknown>> {
  // Docker repeats a Leave for a sandbox it cleans up after a restart: one already gone is nothing to do.
  const dockerId = String(body.EndpointID ?? "");
  await context.joins.stop(dockerId);
  const record = await context.state.endpoint(dockerId);
  if (!record) return {};
  await context.trellis.detach(record.container);
  if (record.endpointId && record.host) await context.trellis.waitUntilRemoved({ id: record.endpointId, host: record.host, container: record.container });
  if (record.sandbox) await context.state.removeSandboxEndpoint(record.sandbox, dockerId);
  return {};
}
