// A compromised host cannot speak for another: on nats-server 2.9.10 agent-h1 can have the server store bytes of its
// choosing under h2's keys (nats-permissions.test.ts shows how), so heartbeats, route announcements and statuses are
// signed by their host's agent key, and their readers believe only those; and what the planner tells the agents to
// build (networks, desired endpoints, names) is signed by the planner's key. Run on deploy/nats/trellis.conf with TLS, the
// certificates from `trellis certs`, and a real route installer reading the buckets as agent-u1.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { settledStatus } from "../../libs/bus/endpoint-status.js";
import { Buckets, desiredKey, nameKey, statusKey } from "../../libs/bus/subjects.js";
import { createNamespace, deleteNamespace } from "../../libs/netlink/index.js";
import { parsePrefix } from "../../libs/ipmath/index.js";
import { BlockRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../../libs/proto/gen/trellis/v1/routes.js";
import { EndpointState, EndpointStatus, HostRecord, NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import { RecordSigner, RecordVerifier } from "../../libs/tls/record-signature.js";
import { writeHeartbeat, type HeartbeatOf } from "../../services/link-agent/heartbeat.js";
import { Announcer } from "../../services/link-agent/routes/announce.js";
import { StatusPublisher } from "../../services/link-agent/status.js";
import { RouteInstaller } from "../../services/link-agent/routes/install.js";
import { DesiredState } from "../../services/link-agent/desired.js";
import { PlannerStore } from "../../services/planner/store.js";
import { repairPublished } from "../../services/planner/repair.js";
import { blockKey } from "../../services/ipam/keys.js";
import { Liveness } from "../../services/ipam/collector.js";
import { makeAuthority, type TestAuthority } from "../support/certificates.js";
import { certificateOf, deployedAuthority, freshPasswords, natsServerTlsEnvironment, passwordEnvironment } from "../support/deployed-nats.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

const CONFIG_FILE = fileURLToPath(new URL("../../deploy/nats/trellis.conf", import.meta.url));
const passwords = freshPasswords();
const BLOCK = { networkId: "net", prefix: "10.9.2.0/26" };
const H1: HeartbeatOf = { host: "h1", addresses: ["192.0.2.11"], role: "host", missingLinkKinds: [], interfaces: [], heartbeatMs: 200 };
const H2: HeartbeatOf = { host: "h2", addresses: ["192.0.2.12"], role: "host", missingLinkKinds: [], interfaces: [], heartbeatMs: 200 };
const STALE_AFTER_MS = 3000;
const announcementCodec = codecOf(RouteAnnouncement);
const hostCodec = codecOf(HostRecord);
const statusCodec = codecOf(EndpointStatus);
const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);
const blockCodec = codecOf(BlockRecord);

let authority: TestAuthority;
let nats: NatsServer;
let verifier: RecordVerifier;
let signerOf: Record<"h1" | "h2" | "planner" | "ipam", RecordSigner>;
const buses = new Map<string, NatsConnection>();
const namespace = `trellis-signed-${process.pid}`;
let installer: RouteInstaller | undefined;
const logged: string[] = [];

async function bucket(user: string, name: string): Promise<KV> {
  let nc = buses.get(user);
  if (!nc) {
    nc = await connectBus({ servers: nats.url, name: `signed-test-${user}`, credentials: { user, password: passwords.get(user)! }, tls: authority.tls(certificateOf(user)) });
    buses.set(user, nc);
  }
  return openBucket(nc, name);
}

async function eventually<T>(what: string, read: () => T | Promise<T>, ok: (value: T) => boolean, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/**
 * As agent-h1, has the server store `bytes` under h2's key of the bucket: h1 writes them under its own key (of the
 * bucket, or of its route announcement for a bucket it may not write at all), then names h2's key as the reply
 * subject of a direct read of it, which the server publishes there unchecked.
 */
async function forgeUnderH2(name: string, bytes: Uint8Array, ownKey = H1.host, target = H2.host, via = name): Promise<void> {
  await (await bucket("agent-h1", via)).put(ownKey, bytes);
  const nc = buses.get("agent-h1")!;
  nc.publish(`$JS.API.DIRECT.GET.KV_${via}.$KV.${via}.${ownKey}`, undefined, { reply: `$KV.${name}.${target}` });
  const stored = await bucket("planner", name);
  await eventually(`the forged value under ${name}/${target}`, async () => Buffer.from((await stored.get(target))?.value ?? []).equals(Buffer.from(bytes)), Boolean);
}

/** The same, into a bucket only the planner may write, through h1's own key of the routes bucket. */
const forgeForPlanner = (name: string, bytes: Uint8Array, target: string) => forgeUnderH2(name, bytes, H1.host, target, Buckets.routes);

const believed = () => Object.fromEntries(installer!.believed());
const heartbeatOfH2 = async () => writeHeartbeat(await bucket("agent-h2", Buckets.hosts), { ...H2, signer: signerOf.h2 });
const announcerOfH2 = async () => new Announcer(await bucket("agent-h2", Buckets.routes), H2.host, H2.addresses, { signer: signerOf.h2, verifier });

beforeAll(async () => {
  authority = await deployedAuthority(["planner", "ipam", "controller", "agent-h1", "agent-h2", "agent-u1"]);
  nats = await startNatsServer({ configFile: CONFIG_FILE, environment: { ...passwordEnvironment(passwords), ...natsServerTlsEnvironment(authority) } });
  verifier = new RecordVerifier(readFileSync(authority.ca));
  signerOf = { h1: new RecordSigner(authority.tls("h1")), h2: new RecordSigner(authority.tls("h2")), planner: new RecordSigner(authority.tls("planner"), "planner"), ipam: new RecordSigner(authority.tls("ipam"), "ipam") };
  const network = Network.fromPartial({ id: BLOCK.networkId, name: "net", mode: "l3" });
  // What the planner and IPAM would have written: the network, and h2's block in IPAM's bucket.
  await (await bucket("planner", Buckets.networks)).put(network.name, networkCodec.encode(signerOf.planner.sign(networkCodec, network)));
  const block = BlockRecord.fromPartial({ networkId: BLOCK.networkId, host: H2.host, cidr: BLOCK.prefix });
  await (await bucket("ipam", Buckets.ipam)).put(blockKey(BLOCK.networkId, parsePrefix(BLOCK.prefix)), blockCodec.encode(signerOf.ipam.sign(blockCodec, block)));
  await heartbeatOfH2();
  await (await announcerOfH2()).announce([BLOCK]);
  await createNamespace(namespace);
  const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((name) => bucket("agent-u1", name)));
  installer = await RouteInstaller.start(
    { routes, hosts, ipam, networks },
    { host: "u1", role: "upstream", netns: namespace, staleAfterMs: STALE_AFTER_MS, resyncMs: 60_000, log: (line) => logged.push(line), verifier },
  );
});

afterAll(async () => {
  await installer?.stop();
  await deleteNamespace(namespace).catch(() => undefined);
  for (const nc of buses.values()) await nc.close();
  await nats?.stop();
});

describe("signed records", () => {
  it("are believed when signed by their own host's agent", async () => {
    await heartbeatOfH2();
    expect(await eventually("h2's block", believed, (routes) => Object.keys(routes).length > 0)).toEqual({ [BLOCK.prefix]: H2.addresses[0] });
  });

  it("a forged announcement for h2, stored with h1's credentials, is believed by nothing, signed by h1 or not at all", async () => {
    const forged: RouteAnnouncement = { host: H2.host, nextHops: H1.addresses, prefixes: [BLOCK], generation: 99, announcedAt: new Date().toISOString() };
    await heartbeatOfH2();
    await forgeUnderH2(Buckets.routes, announcementCodec.encode(signerOf.h1.sign(announcementCodec, forged)));
    expect(await eventually("the forged announcement dropped", believed, (routes) => Object.keys(routes).length === 0)).toEqual({});
    expect(logged).toContain('dropped the route announcement of host h2: it is signed by agent "h1", not by the agent of host h2');
    expect(logged).toContain('ignored key h1 of trellis-routes: it names host "h2", not h1');

    await forgeUnderH2(Buckets.routes, announcementCodec.encode(forged));
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(believed()).toEqual({});
    expect(logged).toContain("dropped the route announcement of host h2: it is not signed");

    // h2's agent finds its key not validly its own, though it says what h2 serves, and writes it again.
    await heartbeatOfH2();
    await (await announcerOfH2()).announce([BLOCK]);
    expect(await eventually("h2's block again", believed, (routes) => Object.keys(routes).length > 0)).toEqual({ [BLOCK.prefix]: H2.addresses[0] });
  });

  it("a block record no IPAM signed grants nothing: h1 cannot give itself a block and announce it", async () => {
    const stolen = { networkId: BLOCK.networkId, prefix: "10.9.2.64/26" };
    const key = blockKey(stolen.networkId, parsePrefix(stolen.prefix));
    const grant = BlockRecord.fromPartial({ networkId: stolen.networkId, host: H1.host, cidr: stolen.prefix });
    await forgeUnderH2(Buckets.ipam, blockCodec.encode(signerOf.h1.sign(blockCodec, grant)), H1.host, key, Buckets.routes);
    await writeHeartbeat(await bucket("agent-h1", Buckets.hosts), { ...H1, signer: signerOf.h1 });
    await new Announcer(await bucket("agent-h1", Buckets.routes), H1.host, H1.addresses, { signer: signerOf.h1, verifier }).announce([stolen]);
    await heartbeatOfH2();
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(believed()).toEqual({ [BLOCK.prefix]: H2.addresses[0] });
    expect(logged.some((line) => line.includes(`not a block record IPAM wrote for host h1 (${stolen.prefix}): it is signed by agent "h1", not by an IPAM replica`))).toBe(true);
    await (await bucket("agent-h1", Buckets.routes)).delete(H1.host);
  });

  it("a forged heartbeat keeps no silent host's routes alive, nor its addresses held, signed by h1 or not at all", async () => {
    // h2 stops heartbeating: its block is withdrawn.
    expect(await eventually("h2 silent", believed, (routes) => Object.keys(routes).length === 0, STALE_AFTER_MS + 5000)).toEqual({});
    const ipamSees = await Liveness.follow({ endpoints: await bucket("ipam", Buckets.endpoints), hosts: await bucket("ipam", Buckets.hosts) }, verifier, () => undefined);
    const lastOwnHeartbeat = ipamSees.heartbeatOf(H2.host);
    const forged: HostRecord = { host: H2.host, address: H2.addresses[0], role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: 0 };
    await forgeUnderH2(Buckets.hosts, hostCodec.encode(signerOf.h1.sign(hostCodec, forged)));
    await forgeUnderH2(Buckets.hosts, hostCodec.encode(forged));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(believed()).toEqual({});
    // IPAM's leak collector still sees h2 as silent since its own last heartbeat.
    expect(ipamSees.heartbeatOf(H2.host)).toBe(lastOwnHeartbeat);
    ipamSees.stop();
    expect(logged).toContain('dropped the heartbeat of host h2: it is signed by agent "h1", not by the agent of host h2');
    expect(logged).toContain("dropped the heartbeat of host h2: it is not signed");
    // Its own heartbeat brings it back: what was dropped was the forgery alone.
    await heartbeatOfH2();
    expect(await eventually("h2 back", believed, (routes) => Object.keys(routes).length > 0)).toEqual({ [BLOCK.prefix]: H2.addresses[0] });
  });

  it("a forged FAILED status for h2's container is passed over by `trellis run`'s wait, which takes h2's own", async () => {
    const endpoint = Endpoint.fromPartial({ id: "ep2", container: "c2", host: H2.host });
    const status = (host: string, state: EndpointState) => EndpointStatus.fromPartial({ endpointId: "ep2", host, container: "c2", state, message: "forged" });
    const warnings = vi.spyOn(console, "error").mockImplementation(() => undefined);
    try {
      const waiting = settledStatus(await bucket("controller", Buckets.status), endpoint, { verifier });
      const forged = signerOf.h1.sign(statusCodec, status(H2.host, EndpointState.ENDPOINT_STATE_FAILED));
      await forgeUnderH2(Buckets.status, statusCodec.encode(forged), statusKey(H1.host, "ep1"), statusKey(H2.host, "ep2"));
      await eventually("the forgery seen", () => warnings.mock.calls.length, (calls) => calls > 0);
      const own = new StatusPublisher(await bucket("agent-h2", Buckets.status), H2.host, { signer: signerOf.h2, verifier });
      await own.put({ ...status(H2.host, EndpointState.ENDPOINT_STATE_READY), message: "" });
      expect(await waiting).toMatchObject({ host: H2.host, state: EndpointState.ENDPOINT_STATE_READY });
      expect(warnings.mock.calls.map(([line]) => line)).toEqual([
        'Warning: dropped the status of container c2 of host h2: it is signed by agent "h1", not by the agent of host h2',
      ]);
    } finally {
      warnings.mockRestore();
    }
  });

  it("a record changed after signing, or signed with another CA's certificate, is not believed", async () => {
    const record: HostRecord = { host: H2.host, address: H2.addresses[0], role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: 0 };
    const signed = signerOf.h2.sign(hostCodec, record);
    expect(verifier.problem(hostCodec, signed, H2.host)).toBeUndefined();
    expect(verifier.problem(hostCodec, { ...signed, address: H1.addresses[0] }, H2.host)).toBe('its signature does not match it (signed by agent "h2")');
    const stranger: TestAuthority = await makeAuthority("stranger");
    await stranger.issue("h2", "agent");
    const strangers = new RecordSigner(stranger.tls("h2")).sign(hostCodec, record);
    expect(verifier.problem(hostCodec, strangers, H2.host)).toBe("its certificate (O=Trellis, OU=agent, CN=h2) was not issued by the cluster's CA");
  });

  it("a forged network, endpoint or name for h2, stored with h1's credentials, is believed by no agent; the planner repairs its own", async () => {
    const planner = await PlannerStore.open(buses.get("planner")!, { intentRetentionMs: 60_000, trust: { signer: signerOf.planner, verifier } });
    const h2Logged: string[] = [];
    const [networks, desired, names] = await Promise.all([Buckets.networks, Buckets.desired, Buckets.names].map((name) => bucket("agent-h2", name)));
    const namesSeen = new Map<string, NameEntry>();
    const listener = { put: (_: string, key: string, entry: NameEntry) => namesSeen.set(key, entry), delete: (_: string, key: string) => namesSeen.delete(key), dropNetwork: () => namesSeen.clear() };
    const state = await DesiredState.start({ networks, desired, names }, H2.host, () => undefined, (line) => h2Logged.push(line), listener, verifier);
    try {
      const network = Network.fromPartial({ id: "n2", name: "web", mode: "l2" });
      const endpoint = Endpoint.fromPartial({ id: "e2", networkId: network.id, networkName: network.name, container: "c2", host: H2.host, netns: "c2@h2", ifname: "eth0", addresses: ["10.9.3.2/24"], createdAt: new Date(0).toISOString() });
      await planner.createNetwork(network);
      await planner.createEndpoint(endpoint);
      await planner.publishEndpoint(endpoint);
      const seen = () => ({ networks: state.networks().map((n) => n.name).sort(), endpoints: state.endpoints().map((e) => e.container), names: [...namesSeen.values()].map((n) => n.name) });
      const planned = { networks: ["net", "web"], endpoints: ["c2"], names: ["c2"] };
      expect(await eventually("the planner's own records", seen, (now) => JSON.stringify(now) === JSON.stringify(planned))).toEqual(planned);

      const evil = Endpoint.fromPartial({ ...endpoint, id: "evil", container: "evil", addresses: ["10.9.3.66/24"] });
      await forgeForPlanner(Buckets.desired, endpointCodec.encode(evil), desiredKey(H2.host, "evil"));
      await forgeForPlanner(Buckets.desired, endpointCodec.encode(signerOf.h1.sign(endpointCodec, { ...endpoint, addresses: ["10.9.3.66/24"] })), desiredKey(H2.host, "e2"));
      await forgeForPlanner(Buckets.names, nameCodec.encode({ networkId: network.id, name: "evil", addresses: ["10.9.3.66"] }), nameKey(network.id, "evil"));
      await forgeForPlanner(Buckets.networks, networkCodec.encode(signerOf.h1.sign(networkCodec, Network.fromPartial({ id: "n3", name: "evil", mode: "l2" }))), "evil");
      // A planner's own signature does not carry a record to another key.
      const h1Endpoint = signerOf.planner.sign(endpointCodec, { ...endpoint, id: "e1", host: H1.host });
      await forgeForPlanner(Buckets.desired, endpointCodec.encode(h1Endpoint), desiredKey(H2.host, "e3"));
      await new Promise((resolve) => setTimeout(resolve, 500));
      expect(seen()).toEqual(planned);
      expect(state.endpoints()[0].addresses).toEqual(endpoint.addresses);
      expect(h2Logged.sort()).toEqual([
        "dropped the endpoint under key h2.e2 of trellis-desired: it is signed by agent \"h1\", not by a planner",

        "dropped the endpoint under key h2.evil of trellis-desired: it is not signed",
        `dropped the name under key ${network.id}.evil of trellis-names: it is not signed`,
        'dropped the network under key evil of trellis-networks: it is signed by agent "h1", not by a planner',
        "ignored key h2.e3 of trellis-desired: it is the endpoint of key h1.e1, not h2.e3",
      ]);

      // The repair finds h2's key holding what no planner signed, and the keys of no endpoint, and puts them right.
      expect(await repairPublished(planner, 0)).toEqual({ rewritten: 1, removed: 3 });
      const stored = endpointCodec.decode((await desired.get(desiredKey(H2.host, "e2")))!.value);
      expect(verifier.serviceProblem(endpointCodec, stored, "planner")).toBeUndefined();
      expect(stored.addresses).toEqual(endpoint.addresses);
      expect(await repairPublished(planner, 0)).toEqual({ rewritten: 0, removed: 0 });
    } finally {
      state.stop();
      planner.close();
    }
  });
});
