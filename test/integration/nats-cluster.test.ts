import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import { jetstreamManager, type JetStreamManager, type StreamInfo } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectBus, openBucket, trellisStreams } from "../../libs/bus/connection.js";
import { Buckets, INTENT_STREAM } from "../../libs/bus/subjects.js";
import { clientCredentials } from "../../libs/grpc/credentials.js";
import { RecordSigner } from "../../libs/tls/record-signature.js";
import { callUnary, clientOptions } from "../../libs/grpc/unary.js";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { writeHeartbeat } from "../../services/link-agent/heartbeat.js";
import type { TestAuthority } from "../support/certificates.js";
import {
  clientTlsEnvironment,
  deployedAuthority,
  freshPasswords,
  natsServerTlsEnvironment,
  passwordEnvironment,
  startTrellisService,
  type TrellisService,
} from "../support/deployed-nats.js";
import { startNatsCluster, type NatsCluster, type NatsClusterNode } from "../support/nats-server.js";
import { runTrellis } from "../support/trellis-cli.js";

// deploy/nats/cluster, three nodes of one JetStream cluster, run as they are on loopback (TLS on routes and clients,
// with certificates from `trellis certs`), with ipam and the planner as
// production runs them (the built CLI, each logged in as its own user, TRELLIS_NATS_REPLICAS=3, the three URLs).
// One node is killed under them, the one leading the IPAM bucket: users must see nothing but a pause, and the node,
// started again, must catch up.

const NODE_FILES = [1, 2, 3].map((n) => fileURLToPath(new URL(`../../deploy/nats/cluster/trellis-${n}.conf`, import.meta.url)));
const IPAM_STREAM = `KV_${Buckets.ipam}`;
const passwords = freshPasswords();
const routePassword = `r${randomBytes(16).toString("hex")}`;
/** Elections take seconds; this is how long users may have to wait, at most, before calls succeed again. */
const FAILOVER_TIMEOUT_MS = 60_000;

// This process opens buckets too (the test's own connections): with the services' setting.
process.env.TRELLIS_NATS_REPLICAS = "3";

let cluster: NatsCluster;
let authority: TestAuthority;
let nc: NatsConnection;
let jsm: JetStreamManager;
const services: TrellisService[] = [];
let control: ControlClient;

/** What the nodes read from their environment; the routes are replaced by the support code's loopback ones. */
function serverEnvironment(routes: string): Record<string, string> {
  return { ...passwordEnvironment(passwords), ...natsServerTlsEnvironment(authority), TRELLIS_NATS_ROUTE_PASSWORD: routePassword, TRELLIS_NATS_ROUTES: routes };
}

function login(user: string): Record<string, string> {
  return {
    TRELLIS_NATS_USER: user,
    TRELLIS_NATS_PASSWORD: passwords.get(user)!,
    TRELLIS_NATS_URL: cluster.urls,
    TRELLIS_NATS_REPLICAS: "3",
    ...clientTlsEnvironment(authority, user),
  };
}

async function startService(user: string, args: string[]): Promise<string> {
  const service = await startTrellisService(args, login(user));
  services.push(service);
  return service.address;
}

function nodeNamed(name: string): NatsClusterNode {
  const node = cluster.nodes.find((n) => n.name === name);
  if (!node) throw new Error(`no node is named ${name}: ${cluster.nodes.map((n) => n.name).join(", ")}`);
  return node;
}

async function eventually<T>(what: string, read: () => Promise<T>, ok: (value: T) => boolean, timeoutMs = FAILOVER_TIMEOUT_MS): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read().catch(() => undefined);
    if (value !== undefined && ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

const streamInfo = (stream: string) => jsm.streams.info(stream);

/** Whether `node` holds a current copy of the stream: as its leader, or as a follower that has caught up. */
function isCurrentOn(info: StreamInfo, node: string): boolean {
  if (info.cluster?.leader === node) return true;
  return info.cluster?.replicas?.some((r) => r.name === node && r.current && !r.offline && !r.lag) ?? false;
}

async function existingStreams(): Promise<StreamInfo[]> {
  const infos = await Promise.all(trellisStreams().map((stream) => streamInfo(stream).catch(() => undefined)));
  return infos.filter((info) => info !== undefined);
}

const attach = (container: string) =>
  callUnary(control.attachEndpoint.bind(control), { intentId: `attach-${container}`, spec: { network: "cluster20", container, host: "h1", ipv4: "", ipv6: "" } });

/**
 * Attaches as a controller does while the cluster elects: retries the same intent until it is answered. A try
 * that was carried out but whose answer was lost is then refused as a duplicate name: the endpoint is there.
 */
async function attachThroughFailover(container: string): Promise<Endpoint> {
  const endpoint = await eventually(`attaching ${container}`, async () => {
    try {
      return await attach(container);
    } catch (error) {
      if (!String((error as Error).message).includes("already in use")) throw error;
      return (await listEndpoints()).find((e) => e.container === container);
    }
  }, (found) => found !== undefined);
  return endpoint!;
}

async function listEndpoints(): Promise<Endpoint[]> {
  return (await callUnary(control.listEndpoints.bind(control), { network: "", pageToken: "", pageSize: 0 })).endpoints;
}

function addressesOf(endpoints: Endpoint[]): string[] {
  return endpoints.flatMap((e) => e.addresses);
}

/** Steps the stream's leader down until `node` leads it (each election picks among the others at random). */
async function makeLeader(stream: string, node: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const leader = (await eventually(`a leader of ${stream}`, () => streamInfo(stream), (info) => Boolean(info.cluster?.leader))).cluster!.leader!;
    if (leader === node) return;
    await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${stream}`, "", { timeout: 5000 }).catch(() => undefined);
    await eventually(`a new leader of ${stream}`, () => streamInfo(stream), (info) => Boolean(info.cluster?.leader) && info.cluster?.leader !== leader);
  }
  throw new Error(`${node} did not become the leader of ${stream} after 20 step-downs`);
}

beforeAll(async () => {
  authority = await deployedAuthority(["planner", "ipam", "agent-h1", "operator"]);
  cluster = await startNatsCluster({ configFiles: NODE_FILES, environment: serverEnvironment("[]"), route: { user: "route", password: routePassword } });
  await cluster.metaLeader(FAILOVER_TIMEOUT_MS);
  nc = await connectBus({ servers: cluster.urls, name: "cluster-test", credentials: { user: "planner", password: passwords.get("planner")! }, tls: authority.tls("planner") });
  jsm = await jetstreamManager(nc);
  const agent = await connectBus({ servers: cluster.urls, name: "cluster-test-h1", credentials: { user: "agent-h1", password: passwords.get("agent-h1")! }, tls: authority.tls("h1") });
  // Signed with h1's key: the planner, with TLS, believes no other heartbeat.
  const signer = new RecordSigner(authority.tls("h1"));
  await writeHeartbeat(await openBucket(agent, Buckets.hosts), { host: "h1", addresses: ["192.0.2.11"], role: "host", missingLinkKinds: [], interfaces: [], heartbeatMs: 2000, signer });
  await agent.close();
  const ipamAddress = await startService("ipam", ["ipam", "--listen=127.0.0.1:0"]);
  const plannerAddress = await startService("planner", ["planner", "--listen=127.0.0.1:0", `--ipam=${ipamAddress}`]);
  control = new ControlClient(plannerAddress, clientCredentials(authority.tls("operator")), clientOptions);
}, 120_000);

afterAll(async () => {
  control?.close();
  await Promise.all(services.map((service) => service.stop()));
  await nc?.close();
  await cluster?.stop();
});

describe("the deployed cluster files", () => {
  it("pass nats-server's check with an operator's variables set", () => {
    const operator = serverEnvironment("[nats-route://route:x1@nats-1:6222, nats-route://route:x1@nats-2:6222, nats-route://route:x1@nats-3:6222]");
    for (const file of NODE_FILES) {
      expect(() => execFileSync("nats-server", ["-t", "-c", file], { env: { ...process.env, ...operator }, stdio: "pipe" })).not.toThrow();
    }
  });

  it("make three nodes with their own names, and every stream the services made has a copy on each", async () => {
    expect(cluster.nodes.map((n) => n.name)).toEqual(["trellis-1", "trellis-2", "trellis-3"]);
    const streams = await existingStreams();
    expect(streams.map((s) => s.config.name)).toEqual(expect.arrayContaining([INTENT_STREAM, IPAM_STREAM, `KV_${Buckets.networks}`, `KV_${Buckets.desired}`]));
    for (const info of streams) {
      expect(info.config.num_replicas, info.config.name).toBe(3);
      expect(info.cluster?.replicas, info.config.name).toHaveLength(2);
    }
  });
});

describe("losing one node of three", () => {
  it("keeps networks, containers and addresses, hands out new ones without a duplicate, and the node catches up", async () => {
    await callUnary(control.createNetwork.bind(control), {
      intentId: "create-cluster20",
      spec: NetworkSpec.fromPartial({ name: "cluster20", driver: "ipvlan", subnets: ["10.20.0.0/24"], options: { parent: "eth0.20" } }),
    });
    for (const container of ["c1", "c2", "c3", "c4"]) await attach(container);
    const before = await listEndpoints();
    expect(addressesOf(before)).toEqual(["10.20.0.2/24", "10.20.0.3/24", "10.20.0.4/24", "10.20.0.5/24"]);

    // The node leading the IPAM bucket: its loss stops every allocation until another is elected.
    const victim = nodeNamed((await streamInfo(IPAM_STREAM)).cluster!.leader!);
    const metaLeaderBefore = await cluster.metaLeader(FAILOVER_TIMEOUT_MS);
    const killedAt = Date.now();
    await victim.kill();

    const c5 = await attachThroughFailover("c5");
    const failoverMs = Date.now() - killedAt;
    const metaLeader = await cluster.metaLeader(FAILOVER_TIMEOUT_MS);
    expect(metaLeader).not.toBe(victim.name);
    // Once the cluster has new leaders, calls succeed at the first try again.
    for (const container of ["c6", "c7", "c8"]) await attach(container);
    expect((await streamInfo(IPAM_STREAM)).cluster?.leader).not.toBe(victim.name);

    const during = await listEndpoints();
    expect(during.filter((e) => before.some((b) => b.container === e.container))).toEqual(before);
    expect(during.map((e) => e.container).sort()).toEqual(["c1", "c2", "c3", "c4", "c5", "c6", "c7", "c8"]);
    expect(new Set(addressesOf(during)).size).toBe(8);
    expect(c5.addresses).not.toEqual(expect.arrayContaining(addressesOf(before)));

    const restartedAt = Date.now();
    await victim.start();
    for (const info of await existingStreams()) {
      await eventually(`${victim.name} to catch up on ${info.config.name}`, () => streamInfo(info.config.name), (i) => isCurrentOn(i, victim.name));
    }
    const catchUpMs = Date.now() - restartedAt;

    // Led by the node that was away, the bucket must hold everything: a create-only write of a taken address
    // would otherwise succeed there, and an allocation would hand it out twice.
    const ipamState = (await streamInfo(IPAM_STREAM)).state;
    await makeLeader(IPAM_STREAM, victim.name);
    expect((await streamInfo(IPAM_STREAM)).state).toMatchObject({ messages: ipamState.messages, last_seq: ipamState.last_seq });
    await attach("c9");
    const after = await listEndpoints();
    expect(new Set(addressesOf(after)).size).toBe(9);
    expect(after.filter((e) => during.some((d) => d.container === e.container))).toEqual(during);

    console.log(
      `nats cluster: killed ${victim.name} (IPAM bucket leader${metaLeaderBefore === victim.name ? " and meta leader" : ""}); ` +
        `first allocation after ${failoverMs} ms; it was back current on every stream ${catchUpMs} ms after its restart`,
    );
  }, 300_000);
});

describe("a replica count that differs from the streams'", () => {
  it("stops a service from starting, saying what to do", async () => {
    const started = startTrellisService(["ipam", "--listen=127.0.0.1:0"], { ...login("ipam"), TRELLIS_NATS_REPLICAS: "1" });
    await expect(started).rejects.toThrow(
      `failed to open stream ${IPAM_STREAM}: it has 3 replica(s) and TRELLIS_NATS_REPLICAS asks for 1; give every service the same TRELLIS_NATS_REPLICAS, ` +
        `or change the streams to it with "trellis nats replicas 1"`,
    );
  });

  it("is set right by trellis nats replicas, which keeps what the stream holds", async () => {
    const routes = await new Kvm(nc).create(Buckets.routes, { history: 1, replicas: 1 });
    await routes.put("h1", new Uint8Array([1, 2, 3]));
    await expect(openBucket(nc, Buckets.routes)).rejects.toThrow(`it has 1 replica(s) and TRELLIS_NATS_REPLICAS asks for 3`);

    const result = await runTrellis(login("planner"), "nats", "replicas", "3");
    expect(result).toMatchObject({ code: 0, stderr: "", stdout: `KV_${Buckets.routes}: 1 -> 3 replicas\nset TRELLIS_NATS_REPLICAS=3 for every service\n` });
    const reopened = await openBucket(nc, Buckets.routes);
    expect([...((await reopened.get("h1"))?.value ?? [])]).toEqual([1, 2, 3]);
    expect((await streamInfo(`KV_${Buckets.routes}`)).cluster?.replicas?.every((r) => r.current)).toBe(true);
  });

  it("refuses a count that JetStream cannot keep", async () => {
    const result = await runTrellis(login("planner"), "nats", "replicas", "7");
    expect(result.code).toBe(2);
    expect(result.stderr).toContain(`invalid replica count "7": must be a whole number from 1 to 5`);
  });
});
