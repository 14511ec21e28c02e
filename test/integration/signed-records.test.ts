// A compromised host cannot speak for another: on nats-server 2.9.10 agent-h1 can have the server store bytes of its
// choosing under h2's keys (nats-permissions.test.ts shows how), so heartbeats, route announcements and statuses are
// signed by their host's agent key, and their readers believe only those. Run on deploy/nats/trellis.conf with TLS, the
// certificates from `trellis certs`, and a real route installer reading the buckets as agent-u1.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, statusKey } from "../../libs/bus/subjects.js";
import { createNamespace, deleteNamespace } from "../../libs/netlink/index.js";
import { parsePrefix } from "../../libs/ipmath/index.js";
import { BlockRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../../libs/proto/gen/trellis/v1/routes.js";
import { EndpointState, EndpointStatus, HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { RecordSigner, RecordVerifier } from "../../libs/tls/record-signature.js";
import { writeHeartbeat, type HeartbeatOf } from "../../services/link-agent/heartbeat.js";
import { watchUntil } from "../../services/cli/endpoint-status.js";
import { Announcer } from "../../services/link-agent/routes/announce.js";
import { StatusPublisher } from "../../services/link-agent/status.js";
import { RouteInstaller } from "../../services/link-agent/routes/install.js";
import { blockKey } from "../../services/ipam/keys.js";
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

let authority: TestAuthority;
let nats: NatsServer;
let verifier: RecordVerifier;
let signerOf: Record<"h1" | "h2", RecordSigner>;
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
 * As agent-h1, has the server store `bytes` under h2's key of the bucket: h1 writes them under its own key, then
 * names h2's key as the reply subject of a direct read of it, which the server publishes there unchecked.
 */
async function forgeUnderH2(name: string, bytes: Uint8Array, ownKey = H1.host, target = H2.host): Promise<void> {
  await (await bucket("agent-h1", name)).put(ownKey, bytes);
  const nc = buses.get("agent-h1")!;
  nc.publish(`$JS.API.DIRECT.GET.KV_${name}.$KV.${name}.${ownKey}`, undefined, { reply: `$KV.${name}.${target}` });
  const stored = await bucket("planner", name);
  await eventually(`the forged value under ${name}/${target}`, async () => Buffer.from((await stored.get(target))?.value ?? []).equals(Buffer.from(bytes)), Boolean);
}

const believed = () => Object.fromEntries(installer!.believed());
const heartbeatOfH2 = async () => writeHeartbeat(await bucket("agent-h2", Buckets.hosts), { ...H2, signer: signerOf.h2 });
const announcerOfH2 = async () => new Announcer(await bucket("agent-h2", Buckets.routes), H2.host, H2.addresses, { signer: signerOf.h2, verifier });

beforeAll(async () => {
  authority = await deployedAuthority(["planner", "controller", "agent-h1", "agent-h2", "agent-u1"]);
  nats = await startNatsServer({ configFile: CONFIG_FILE, environment: { ...passwordEnvironment(passwords), ...natsServerTlsEnvironment(authority) } });
  verifier = new RecordVerifier(readFileSync(authority.ca));
  signerOf = { h1: new RecordSigner(authority.tls("h1")), h2: new RecordSigner(authority.tls("h2")) };
  const network = Network.fromPartial({ id: BLOCK.networkId, name: "net", mode: "l3" });
  // What the planner and IPAM would have written: the network, and h2's block in IPAM's bucket.
  await (await bucket("planner", Buckets.networks)).put(network.name, codecOf(Network).encode(network));
  const block = BlockRecord.fromPartial({ networkId: BLOCK.networkId, host: H2.host, cidr: BLOCK.prefix });
  await (await bucket("planner", Buckets.ipam)).put(blockKey(BLOCK.networkId, parsePrefix(BLOCK.prefix)), codecOf(BlockRecord).encode(block));
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

  it("a forged heartbeat keeps no silent host's routes alive, signed by h1 or not at all", async () => {
    // h2 stops heartbeating: its block is withdrawn.
    expect(await eventually("h2 silent", believed, (routes) => Object.keys(routes).length === 0, STALE_AFTER_MS + 5000)).toEqual({});
    const forged: HostRecord = { host: H2.host, address: H2.addresses[0], role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: 0 };
    await forgeUnderH2(Buckets.hosts, hostCodec.encode(signerOf.h1.sign(hostCodec, forged)));
    await forgeUnderH2(Buckets.hosts, hostCodec.encode(forged));
    await new Promise((resolve) => setTimeout(resolve, 1000));
    expect(believed()).toEqual({});
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
      const waiting = watchUntil(await bucket("controller", Buckets.status), statusKey(H2.host, "ep2"), false, endpoint, verifier);
      const forged = signerOf.h1.sign(statusCodec, status(H2.host, EndpointState.ENDPOINT_STATE_FAILED));
      await forgeUnderH2(Buckets.status, statusCodec.encode(forged), statusKey(H1.host, "ep1"), statusKey(H2.host, "ep2"));
      await eventually("the forgery seen", () => warnings.mock.calls.length, (calls) => calls > 0);
      const own = new StatusPublisher(await bucket("agent-h2", Buckets.status), H2.host, { signer: signerOf.h2, verifier });
      await own.publish(new Map([["ep2", { ...status(H2.host, EndpointState.ENDPOINT_STATE_READY), message: "" }]]));
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
});
