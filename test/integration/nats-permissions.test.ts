import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { connect, headers, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, natsTlsOptions, openBucket } from "../../libs/bus/connection.js";
import { RecordSigner } from "../../libs/tls/record-signature.js";
import { loadTls } from "../../libs/tls/settings.js";
import { getValue, isLive, listValues } from "../../libs/bus/kv.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { Buckets, desiredKey, hostKeysFilter, INTENT_SUBJECT, IPAM_BLOCKS_FILTER, statusKey } from "../../libs/bus/subjects.js";
import { createNamespace, deleteNamespace } from "../../libs/netlink/index.js";
import { Endpoint, Network, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { RouteAnnouncement, type AnnouncedPrefix } from "../../libs/proto/gen/trellis/v1/routes.js";
import { EndpointState, EndpointStatus, HostRecord, Intent, IntentResult } from "../../libs/proto/gen/trellis/v1/state.js";
import { writeHeartbeat, type HeartbeatOf } from "../../services/link-agent/heartbeat.js";
import { Announcer, servedPrefixes } from "../../services/link-agent/routes/announce.js";
import { Grants } from "../../services/link-agent/routes/grants.js";
import { RouteInstaller } from "../../services/link-agent/routes/install.js";
import { StatusPublisher } from "../../services/link-agent/status.js";
import { readFileSync } from "node:fs";
import { createConnection } from "node:net";
import type { TestAuthority } from "../support/certificates.js";
import {
  certificateOf,
  clientTlsEnvironment,
  deployedAuthority,
  freshPasswords,
  natsServerTlsEnvironment,
  passwordEnvironment,
  passwordVariable,
  startTrellisService,
  type TrellisService,
} from "../support/deployed-nats.js";
import { makeAuthority } from "../support/certificates.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

// deploy/nats/trellis.conf, the production NATS configuration, run as it is, with TLS and client certificates
// made by `trellis certs`: the support code moves only its port and its store to loopback and a temporary directory. Each user is checked the way it works: ipam and
// the planner as processes of the built CLI, logged in as production logs them in (TRELLIS_NATS_USER and
// TRELLIS_NATS_PASSWORD); an agent through its own writers and route installer; the rest with plain KV calls.

const CONFIG_FILE = fileURLToPath(new URL("../../deploy/nats/trellis.conf", import.meta.url));

const AGENTS: HeartbeatOf[] = [
  { host: "h1", addresses: ["192.0.2.11"], role: "host", missingLinkKinds: [], interfaces: ["eth0", "lo"], heartbeatMs: 2000 },
  { host: "h2", addresses: ["192.0.2.12"], role: "host", missingLinkKinds: [], interfaces: ["eth0", "lo"], heartbeatMs: 2000 },
  { host: "u1", addresses: ["192.0.2.201"], role: "upstream", missingLinkKinds: [], interfaces: ["eth0", "lo"], heartbeatMs: 2000 },
];
const [H1, H2] = AGENTS;
const USERS = ["planner", "ipam", "controller", ...AGENTS.map(agentUser)];
const passwords = freshPasswords(USERS);

/** The buckets each user may read, as the configuration's comments say; every other bucket is refused. */
const READS: Record<"ipam" | "controller" | "agent", string[]> = {
  ipam: [Buckets.ipam, Buckets.endpoints, Buckets.hosts],
  controller: [Buckets.intents, Buckets.status],
  agent: [Buckets.hosts, Buckets.status, Buckets.desired, Buckets.routes, Buckets.networks, Buckets.names],
};

const statusCodec = codecOf(EndpointStatus);
const endpointCodec = codecOf(Endpoint);
const resultCodec = codecOf(IntentResult);

let nats: NatsServer;
let authority: TestAuthority;
const buses = new Map<string, NatsConnection>();
const services: TrellisService[] = [];

function serverEnvironment(): Record<string, string> {
  return { ...passwordEnvironment(passwords), ...natsServerTlsEnvironment(authority) };
}

/** Logs in over plain TCP, as a client without TLS would: the server's INFO line, and what follows the login. */
async function plaintextLogin(user: string): Promise<{ info: string; answer: string }> {
  const socket = createConnection(nats.port, "127.0.0.1");
  let received = "";
  let info = "";
  return new Promise((resolve, reject) => {
    socket.on("error", reject);
    socket.on("data", (chunk) => {
      received += chunk.toString();
      if (!info && received.includes("\r\n")) {
        info = received.slice(0, received.indexOf("\r\n"));
        received = "";
        socket.write(`CONNECT ${JSON.stringify({ user, pass: passwords.get(user), verbose: false })}\r\nPING\r\n`);
      }
    });
    socket.on("close", () => resolve({ info, answer: received.includes("PONG") ? received : "closed, no answer" }));
  });
}

/** The agent's heartbeat signed with its host's key, as the planner, with TLS, believes only such. */
function signedBy(agent: HeartbeatOf): HeartbeatOf {
  return { ...agent, signer: new RecordSigner(authority.tls(agent.host)) };
}

function agentUser(agent: HeartbeatOf): string {
  return `agent-${agent.host}`;
}

function bucketsBut(names: string[]): string[] {
  return Object.values(Buckets).filter((name) => !names.includes(name));
}

async function bus(user: string): Promise<NatsConnection> {
  let nc = buses.get(user);
  if (!nc) {
    nc = await connectBus({ servers: nats.url, name: `permissions-test-${user}`, credentials: { user, password: passwords.get(user)! }, tls: authority.tls(certificateOf(user)) });
    buses.set(user, nc);
  }
  return nc;
}

async function bucket(user: string, name: string): Promise<KV> {
  return openBucket(await bus(user), name);
}

/** A Trellis service as production runs it, logged in as `user`. Resolves with the address it serves on. */
async function startService(user: string, args: string[]): Promise<string> {
  const service = await startTrellisService([...args, `--nats=${nats.url}`], {
    TRELLIS_NATS_USER: user,
    TRELLIS_NATS_PASSWORD: passwords.get(user)!,
    ...clientTlsEnvironment(authority, user),
  });
  services.push(service);
  return service.address;
}

async function eventually<T>(what: string, read: () => Promise<T>, ok: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function keysOf(kv: KV, filter = ">"): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of await kv.keys(filter)) keys.push(key);
  return keys;
}

/** Every key of the buckets with its revision and value, as the planner reads them: what a refused write must leave alone. */
async function snapshot(): Promise<Record<string, string>> {
  const entries: Record<string, string> = {};
  for (const name of Object.values(Buckets)) {
    const kv = await bucket("planner", name);
    for (const key of await keysOf(kv)) {
      const entry = await kv.get(key);
      if (entry) entries[`${name}/${key}`] = `${entry.revision} ${entry.operation} ${Buffer.from(entry.value).toString("hex")}`;
    }
  }
  return entries;
}

/** The error the server closed a subscription with, or "still open" when it let it be. */
async function closedWith(subscription: Subscription): Promise<unknown> {
  const stillOpen = new Promise((resolve) => setTimeout(() => resolve("still open"), 2000).unref());
  return Promise.race([subscription.closed, stillOpen]);
}

function refusal(subject: string): string {
  return `Permissions Violation for Publish to "${subject}"`;
}

/** Writes as a KV put does: a JetStream publish to the key's subject. */
async function put(user: string, name: string, key: string): Promise<void> {
  await jetstream(await bus(user)).publish(`$KV.${name}.${key}`, new Uint8Array([1]));
}

async function expectWriteRefused(user: string, name: string, key: string): Promise<void> {
  await expect(put(user, name, key)).rejects.toThrow(refusal(`$KV.${name}.${key}`));
}

/** A JetStream API call, by its subject. */
async function expectCallRefused(user: string, subject: string, request: object = {}): Promise<void> {
  const nc = await bus(user);
  await expect(nc.request(subject, JSON.stringify(request), { timeout: 2000 })).rejects.toThrow(refusal(subject));
}

/** Opening the bucket, reading a key, watching it. */
async function expectReadRefused(user: string, name: string): Promise<void> {
  await expect(bucket(user, name)).rejects.toThrow(refusal(`$JS.API.STREAM.INFO.KV_${name}`));
  await expectCallRefused(user, `$JS.API.DIRECT.GET.KV_${name}.$KV.${name}.h1`);
  await expectCallRefused(user, `$JS.API.CONSUMER.CREATE.KV_${name}`, { stream_name: `KV_${name}`, config: { ack_policy: AckPolicy.None } });
}

/** Deleting, purging or reconfiguring any bucket's stream. */
async function expectStreamsLocked(user: string): Promise<void> {
  for (const name of Object.values(Buckets)) {
    const stream = `KV_${name}`;
    await expectCallRefused(user, `$JS.API.STREAM.DELETE.${stream}`);
    await expectCallRefused(user, `$JS.API.STREAM.PURGE.${stream}`);
    await expectCallRefused(user, `$JS.API.STREAM.UPDATE.${stream}`, { name: stream, subjects: [`$KV.${name}.>`], max_msgs_per_subject: 5 });
  }
}

function endpointStatus(host: string, endpointId: string, addresses: string[] = []): EndpointStatus {
  return EndpointStatus.fromPartial({ endpointId, host, container: endpointId, state: EndpointState.ENDPOINT_STATE_READY, addresses });
}

async function publishStatus(agent: HeartbeatOf, as: string, endpointId: string): Promise<void> {
  const statuses = new StatusPublisher(await bucket(as, Buckets.status), agent.host);
  await statuses.put(endpointStatus(agent.host, endpointId));
}

async function announce(agent: HeartbeatOf, as: string, prefixes: AnnouncedPrefix[]): Promise<void> {
  await new Announcer(await bucket(as, Buckets.routes), agent.host, agent.addresses).announce(prefixes);
}

/** An agent's three kinds of keys, written by the agent itself. */
async function writeOwnKeys(agent: HeartbeatOf): Promise<void> {
  const user = agentUser(agent);
  await writeHeartbeat(await bucket(user, Buckets.hosts), signedBy(agent));
  await publishStatus(agent, user, `ep-${agent.host}`);
  await announce(agent, user, [{ networkId: "net", prefix: `10.9.${AGENTS.indexOf(agent)}.0/26` }]);
}

async function submit(intent: Intent): Promise<IntentResult> {
  await jetstream(await bus("controller")).publish(INTENT_SUBJECT, codecOf(Intent).encode(intent));
  const results = await bucket("controller", Buckets.intents);
  const result = await eventually(`the result of intent ${intent.id}`, () => getValue(results, resultCodec, intent.id), (r) => r !== undefined);
  return result!.value;
}

function networkSpec(name: string, subnet: string, mode: string): NetworkSpec {
  return NetworkSpec.fromPartial({ name, driver: "ipvlan", subnets: [subnet], options: { ipvlan_mode: mode } });
}

async function createNetwork(name: string, subnet: string, mode = "l2"): Promise<void> {
  const result = await submit({ id: `create-${name}`, action: { $case: "createNetwork", value: networkSpec(name, subnet, mode) } });
  expect(result).toMatchObject({ code: 0, network: { name } });
}

async function attach(container: string, network: string, host: string): Promise<Endpoint> {
  const result = await submit({ id: `attach-${container}`, action: { $case: "attachEndpoint", value: { network, container, host, ipv4: "", ipv6: "" } } });
  expect(result).toMatchObject({ code: 0, endpoint: { container, host } });
  return result.endpoint!;
}

/** A container's key in its host's desired state, as the host's agent reads it. */
async function desiredWith(agent: HeartbeatOf, container: string): Promise<Endpoint> {
  const desired = await bucket(agentUser(agent), Buckets.desired);
  const endpoints = async () => {
    const found: Endpoint[] = [];
    for (const key of await keysOf(desired, hostKeysFilter(agent.host))) found.push((await getValue(desired, endpointCodec, key))!.value);
    return found;
  };
  const listed = await eventually(`${container} in the desired state of ${agent.host}`, endpoints, (all) => all.some((e) => e.container === container));
  return listed.find((e) => e.container === container)!;
}

beforeAll(async () => {
  authority = await deployedAuthority(USERS);
  nats = await startNatsServer({ configFile: CONFIG_FILE, environment: serverEnvironment() });
  for (const agent of AGENTS) await writeHeartbeat(await bucket(agentUser(agent), Buckets.hosts), signedBy(agent));
  const ipamAddress = await startService("ipam", ["ipam", "--listen=127.0.0.1:0"]);
  await startService("planner", ["planner", "--listen=127.0.0.1:0", `--ipam=${ipamAddress}`]);
});

afterAll(async () => {
  await Promise.all(services.map((service) => service.stop()));
  for (const nc of buses.values()) await nc.close();
  await nats?.stop();
});

describe("the deployed file", () => {
  it("passes nats-server's check with the password variables set, and is refused with a password that reads as a number", () => {
    expect(() => execFileSync("nats-server", ["-t", "-c", CONFIG_FILE], { env: { ...process.env, ...serverEnvironment() }, stdio: "pipe" })).not.toThrow();
    const numeric = { ...process.env, ...serverEnvironment(), [passwordVariable("ipam")]: "0123" };
    expect(() => execFileSync("nats-server", ["-t", "-c", CONFIG_FILE], { env: numeric, stdio: "pipe" })).toThrow();
  });

  it("admits no one without a password, nor with another user's, even with a certificate", async () => {
    const tls = natsTlsOptions(authority.tls("h1"));
    await expect(connect({ servers: nats.url, reconnect: false, tls })).rejects.toThrow("Authorization Violation");
    await expect(connect({ servers: nats.url, reconnect: false, tls, user: "agent-h1", pass: passwords.get("agent-h2") })).rejects.toThrow("Authorization Violation");
  });

  it("speaks only TLS: a plaintext client's login gets no answer, and the server closes the connection", async () => {
    const { info, answer } = await plaintextLogin("agent-h1");
    expect(JSON.parse(info.replace(/^INFO /, ""))).toMatchObject({ tls_required: true, tls_verify: true });
    expect(answer).toBe("closed, no answer");
  });

  it("admits no client without a certificate from its CA", async () => {
    const login = { servers: nats.url, reconnect: false, user: "agent-h1", pass: passwords.get("agent-h1") };
    const noCertificate = natsTlsOptions(loadTls({ ca: authority.ca }));
    // The server ends the handshake: the client reads its alert, or, when the close comes first, the reset.
    const cutHandshake = /alert bad certificate|ECONNRESET/;
    await expect(connect({ ...login, tls: noCertificate })).rejects.toThrow(cutHandshake);
    const stranger = await makeAuthority("stranger");
    await stranger.issue("h1", "agent");
    const strangers = { ...natsTlsOptions(authority.tls("h1")), cert: readFileSync(`${stranger.dir}/h1.crt`, "utf8"), key: readFileSync(`${stranger.dir}/h1.key`, "utf8") };
    await expect(connect({ ...login, tls: strangers })).rejects.toThrow(cutHandshake);
    expect(await bus("agent-h1")).toBeDefined();
  });

  it("is not reached by a client that does not trust its certificate, which connectBus says at once", async () => {
    const stranger = await makeAuthority("distrusting");
    await stranger.issue("h1", "agent");
    const login = { user: "agent-h1", password: passwords.get("agent-h1")! };
    await expect(connectBus({ servers: nats.url, name: "distrusting", credentials: login, tls: stranger.tls("h1") })).rejects.toThrow(
      `failed to connect to NATS at ${nats.url}: unable to verify the first certificate`,
    );
  });
});

describe.each(AGENTS)("the link-agent of $host", (agent) => {
  const user = agentUser(agent);
  const other = agent === H1 ? H2 : H1;

  it("writes its heartbeat, and writes and removes its endpoints' statuses and its announcement, with the agent's own writers", async () => {
    await writeOwnKeys(agent);
    const [hosts, status, routes] = await Promise.all([Buckets.hosts, Buckets.status, Buckets.routes].map((name) => bucket("planner", name)));
    expect((await getValue(hosts, codecOf(HostRecord), agent.host))?.value).toMatchObject({ host: agent.host, address: agent.addresses[0] });
    expect((await getValue(status, statusCodec, statusKey(agent.host, `ep-${agent.host}`)))?.value.state).toBe(EndpointState.ENDPOINT_STATE_READY);
    expect((await getValue(routes, codecOf(RouteAnnouncement), agent.host))?.value).toMatchObject({ host: agent.host, nextHops: agent.addresses });

    const restarted = new StatusPublisher(await bucket(user, Buckets.status), agent.host);
    await restarted.load();
    for (const endpointId of restarted.endpointIds()) await restarted.remove(endpointId);
    await announce(agent, user, []);
    expect(isLive(await status.get(statusKey(agent.host, `ep-${agent.host}`)))).toBe(false);
    expect(isLive(await routes.get(agent.host))).toBe(false);
  });

  it("cannot write another host's heartbeat, statuses or announcement, which stay as they were", async () => {
    await writeOwnKeys(other);
    const before = await snapshot();
    await expect(writeHeartbeat(await bucket(user, Buckets.hosts), { ...other, addresses: agent.addresses })).rejects.toThrow(refusal(`$KV.trellis-hosts.${other.host}`));
    await expect(publishStatus(other, user, `ep-${other.host}`)).rejects.toThrow(refusal(`$KV.trellis-status.${other.host}.ep-${other.host}`));
    await expect(announce(other, user, [{ networkId: "net", prefix: "10.9.9.0/26" }])).rejects.toThrow(
      `failed to announce 1 prefixes of host ${other.host}: ${refusal(`$KV.trellis-routes.${other.host}`)}`,
    );
    await expect((await bucket(user, Buckets.routes)).delete(other.host)).rejects.toThrow(refusal(`$KV.trellis-routes.${other.host}`));
    expect(await snapshot()).toEqual(before);
  });

  it("cannot write desired state, not even its own, nor any bucket but its three", async () => {
    const before = await snapshot();
    const desired = endpointCodec.encode(Endpoint.fromPartial({ id: "forged", host: agent.host, container: "forged" }));
    const key = desiredKey(agent.host, "forged");
    await expect((await bucket(user, Buckets.desired)).put(key, desired)).rejects.toThrow(refusal(`$KV.trellis-desired.${key}`));
    for (const name of bucketsBut([Buckets.hosts, Buckets.status, Buckets.routes])) await expectWriteRefused(user, name, agent.host);
    await expect(jetstream(await bus(user)).publish(INTENT_SUBJECT, new Uint8Array())).rejects.toThrow(refusal(INTENT_SUBJECT));
    expect(await snapshot()).toEqual(before);
  });

  it("cannot delete, purge or reconfigure any bucket", async () => {
    await expectStreamsLocked(user);
  });

  it("cannot read the control plane's buckets, nor IPAM's but for its block records", async () => {
    for (const name of bucketsBut([...READS.agent, Buckets.ipam])) await expectReadRefused(user, name);
    await expectCallRefused(user, `$JS.API.DIRECT.GET.KV_${Buckets.ipam}.$KV.${Buckets.ipam}.registry`);
    await expectCallRefused(user, `$JS.API.CONSUMER.CREATE.KV_${Buckets.ipam}`, { stream_name: `KV_${Buckets.ipam}`, config: { ack_policy: AckPolicy.None } });
    const addresses = `$JS.API.CONSUMER.CREATE.KV_${Buckets.ipam}.watch.$KV.${Buckets.ipam}.addr.>`;
    await expectCallRefused(user, addresses, { stream_name: `KV_${Buckets.ipam}`, config: { ack_policy: AckPolicy.None, filter_subject: `$KV.${Buckets.ipam}.addr.>` } });
  });
});

describe("the planner and a controller", () => {
  it("the planner works off a controller's intents, with IPAM's addresses, and writes the host's desired state", async () => {
    await createNetwork("db_net", "10.50.0.0/24");
    const endpoint = await attach("c1", "db_net", H1.host);
    expect(endpoint.addresses).toEqual(["10.50.0.2/24"]);
    expect((await desiredWith(H1, "c1")).addresses).toEqual(["10.50.0.2/24"]);
  });

  it("a controller reads the statuses its containers get", async () => {
    const endpoint = await desiredWith(H1, "c1");
    await publishStatus(H1, agentUser(H1), endpoint.id);
    const status = await getValue(await bucket("controller", Buckets.status), statusCodec, statusKey(H1.host, endpoint.id));
    expect(status?.value).toMatchObject({ host: H1.host, state: EndpointState.ENDPOINT_STATE_READY });
  });

  it("a controller cannot write any bucket, nor change one, nor read the others", async () => {
    const before = await snapshot();
    for (const name of Object.values(Buckets)) await expectWriteRefused("controller", name, "h1");
    await expectStreamsLocked("controller");
    for (const name of bucketsBut(READS.controller)) await expectReadRefused("controller", name);
    expect(await snapshot()).toEqual(before);
  });
});

describe("IPAM", () => {
  it("keeps the addresses in its own bucket, and reads the endpoints and heartbeats its leak collector needs", async () => {
    expect((await keysOf(await bucket("ipam", Buckets.ipam))).length).toBeGreaterThan(0);
    const endpoints = await listValues(await bucket("ipam", Buckets.endpoints), codecOf(Endpoint));
    expect(endpoints.map((e) => e.container)).toContain("c1");
    const hosts = await listValues(await bucket("ipam", Buckets.hosts), codecOf(HostRecord));
    expect(hosts.map((h) => h.host).sort()).toEqual(AGENTS.map((a) => a.host).sort());
  });

  it("cannot write any other bucket, nor change one, nor read those it does not need", async () => {
    const before = await snapshot();
    for (const name of bucketsBut([Buckets.ipam])) await expectWriteRefused("ipam", name, "h1");
    await expect(jetstream(await bus("ipam")).publish(INTENT_SUBJECT, new Uint8Array())).rejects.toThrow(refusal(INTENT_SUBJECT));
    await expectStreamsLocked("ipam");
    for (const name of bucketsBut(READS.ipam)) await expectReadRefused("ipam", name);
    expect(await snapshot()).toEqual(before);
  });
});

describe("what a link-agent reads", () => {
  const namespace = `trellis-perm-${process.pid}`;
  let installer: RouteInstaller | undefined;

  afterAll(async () => {
    await installer?.stop();
    await deleteNamespace(namespace).catch(() => undefined);
  });

  it("is enough for route distribution: h1's route installer takes the block h2 announces", async () => {
    await createNetwork("l3net", "10.40.0.0/24", "l3");
    await attach("c2", "l3net", H2.host);
    const endpoint = await desiredWith(H2, "c2");
    const network = (await getValue(await bucket(agentUser(H2), Buckets.networks), codecOf(Network), "l3net"))!.value;
    // What IPAM gave h2, as h2's agent reads it: IPAM's block records, through a watch.
    const grants = new Grants();
    const ipamBlocks = await FollowedBucket.start(await bucket(agentUser(H2), Buckets.ipam), { bucketName: Buckets.ipam, filter: IPAM_BLOCKS_FILTER, onEntry: (entry) => grants.apply(entry) });
    ipamBlocks.stop();
    await writeHeartbeat(await bucket(agentUser(H2), Buckets.hosts), signedBy(H2));
    const prefixes = servedPrefixes({ networks: [network], endpoints: [endpoint], grants: grants.of(H2.host) }, [endpointStatus(H2.host, endpoint.id, endpoint.addresses)], H2.addresses);
    expect(prefixes).toEqual([{ networkId: network.id, prefix: "10.40.0.0/26" }]);
    await announce(H2, agentUser(H2), prefixes);

    await createNamespace(namespace);
    const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((name) => bucket(agentUser(H1), name)));
    installer = await RouteInstaller.start(
      { routes, hosts, ipam, networks },
      { host: H1.host, role: "host", netns: namespace, staleAfterMs: 10_000, resyncMs: 60_000, log: () => undefined },
    );
    const believed = await eventually("h2's block in h1's belief", async () => installer!.believed(), (routes) => routes.size > 0);
    expect(Object.fromEntries(believed)).toEqual({ [prefixes[0].prefix]: H2.addresses[0] });
  });

  it("is only its own replies, as for every user but the planner: no one may listen to anyone else's", async () => {
    for (const user of USERS.filter((u) => u !== "planner")) {
      for (const subject of ["_INBOX.>", "_INBOX.planner.>"]) {
        expect(await closedWith((await bus(user)).subscribe(subject))).toMatchObject({ message: `Permissions Violation for Subscription to "${subject}"` });
      }
    }
  });
});

// These assert the holes that deploy/nats/trellis.conf owns up to, so that a server that closes one fails here
// and the comments there get put right.
describe("what the permissions do not stop, on nats-server 2.9.10", () => {
  const forged = "forged by agent-h1";

  /** What agent-h1 may write: its own announcement, here any bytes it likes. */
  async function announceBytes(bytes: Uint8Array): Promise<NatsConnection> {
    await (await bucket(agentUser(H1), Buckets.routes)).put(H1.host, bytes);
    return bus(agentUser(H1));
  }

  async function desiredOfH2(): Promise<string> {
    const entry = await (await bucket("planner", Buckets.desired)).get(H2.host);
    return new TextDecoder().decode(entry?.value);
  }

  it("an agent names another host's key as the reply subject of a read, and the server stores its bytes there", async () => {
    const nc = await announceBytes(new TextEncoder().encode(forged));
    nc.publish(`$JS.API.DIRECT.GET.KV_${Buckets.routes}.$KV.${Buckets.routes}.${H1.host}`, undefined, { reply: `$KV.${Buckets.desired}.${H2.host}` });
    expect(await eventually("the forged desired state of h2", desiredOfH2, (value) => value === forged)).toBe(forged);
  });

  it("an agent makes a push consumer deliver its bytes as an intent, which the planner carries out", async () => {
    const intent: Intent = { id: "forged-1", action: { $case: "createNetwork", value: networkSpec("forged_net", "10.60.0.0/24", "l2") } };
    const nc = await announceBytes(codecOf(Intent).encode(intent));
    await (await jetstreamManager(nc)).consumers.add(`KV_${Buckets.routes}`, {
      deliver_subject: INTENT_SUBJECT,
      filter_subject: `$KV.${Buckets.routes}.${H1.host}`,
      deliver_policy: DeliverPolicy.LastPerSubject,
      ack_policy: AckPolicy.None,
    });
    const results = await bucket("controller", Buckets.intents);
    const result = await eventually("the planner's result of the forged intent", () => getValue(results, resultCodec, intent.id), (r) => r !== undefined);
    expect(result?.value).toMatchObject({ code: 0, network: { name: "forged_net" } });
  });

  it("an agent's rollup header on its own key removes every other host's key of the bucket", async () => {
    await writeOwnKeys(H2);
    const nc = await bus(agentUser(H1));
    const rollup = headers();
    rollup.set("Nats-Rollup", "all");
    await jetstream(nc).publish(`$KV.${Buckets.routes}.${H1.host}`, new TextEncoder().encode(forged), { headers: rollup });
    expect(await keysOf(await bucket("planner", Buckets.routes))).toEqual([H1.host]);
  });
});
