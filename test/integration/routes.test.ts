import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { codecOf } from "../../libs/bus/codec.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { createNamespace, deleteNamespace, openNetlink, type RouteChange } from "../../libs/netlink/index.js";
import { RouteAnnouncement } from "../../libs/proto/gen/trellis/v1/routes.js";
import { BlockRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { RouteInstaller, type InstallerBuckets } from "../../services/link-agent/routes/install.js";
import { hostPrefix } from "../../services/link-agent/routes/prefixes.js";
import { blockKey } from "../../services/ipam/keys.js";
import { parsePrefix } from "../../libs/ipmath/index.js";
import { eventually as eventuallyValue } from "../support/eventually.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";
import { agentRegistry } from "../../libs/metrics/agent.js";

// Several agents' route installers, each programming its own fresh namespace, against a real nats-server.
// Each namespace has a veth "underlay" 192.168.77.0/24 so that next hops there are reachable.

const STALE_AFTER_MS = 1500;
const L3NET = "l3net";
const networkCodec = codecOf(Network);
const blockCodec = codecOf(BlockRecord);
const hostCodec = codecOf(HostRecord);
const announcementCodec = codecOf(RouteAnnouncement);

let nats: NatsServer;
let nc: NatsConnection;
let buckets: InstallerBuckets;
const namespaces: string[] = [];
const installers: RouteInstaller[] = [];
const logs: string[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectBus({ servers: nats.url, name: "routes-test" });
  const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((b) => openBucket(nc, b)));
  buckets = { routes, hosts, ipam, networks };
});

afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

afterEach(async () => {
  for (const installer of installers.splice(0)) await installer.stop();
  for (const name of namespaces.splice(0)) await deleteNamespace(name);
  for (const bucket of Object.values(buckets)) for await (const key of await bucket.keys()) await bucket.purge(key);
  logs.length = 0;
});

function ip(netns: string, ...args: string[]): string {
  return execFileSync("ip", ["-n", netns, ...args], { encoding: "utf8" });
}

/** A host's namespace with its underlay address, and its installer. */
async function startHost(host: string, role: "host" | "upstream" = "host", netns?: string): Promise<{ netns: string; installer: RouteInstaller }> {
  if (!netns) {
    netns = `trt-${host}-${randomBytes(3).toString("hex")}`;
    namespaces.push(netns);
    await createNamespace(netns);
    ip(netns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1");
    ip(netns, "addr", "add", "192.168.77.1/24", "dev", "ul0");
    ip(netns, "link", "set", "ul1", "up");
    ip(netns, "link", "set", "ul0", "up");
  }
  const installer = await RouteInstaller.start(buckets, { host, role, netns, staleAfterMs: STALE_AFTER_MS, resyncMs: 60_000, log: (line) => logs.push(line) });
  installers.push(installer);
  return { netns, installer };
}

/** The L3 network every host has, and what IPAM would record: each of the host's addresses as borrowed by it. */
async function desire(host: string, addresses: string[]): Promise<void> {
  await buckets.networks.put(L3NET, networkCodec.encode(Network.fromPartial({ id: L3NET, name: L3NET, driver: "ipvlan", mode: "l3", flag: "bridge" })));
  for (const address of addresses) {
    const cidr = hostPrefix(address);
    const record = BlockRecord.fromPartial({ networkId: L3NET, host, cidr, borrowed: true });
    await buckets.ipam.put(blockKey(L3NET, parsePrefix(cidr)), blockCodec.encode(record));
  }
}

async function heartbeat(host: string): Promise<void> {
  await buckets.hosts.put(host, hostCodec.encode({ host, address: "", role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: 0 }));
}

async function announce(host: string, nextHop: string, prefixes: string[]): Promise<void> {
  const announcement = { host, nextHops: [nextHop], prefixes: prefixes.map((prefix) => ({ networkId: L3NET, prefix })), generation: 1, announcedAt: "" };
  await buckets.routes.put(host, announcementCodec.encode(announcement));
}

/** Trellis's routes in a namespace, as `ip` prints them. */
/** h1's installer, once it has the route to 10.1.0.2/32 that a heartbeating h2 announces. */
async function h1WithRouteFromH2(): Promise<{ netns: string; installer: RouteInstaller }> {
  await desire("h1", []);
  await desire("h2", ["10.1.0.2/16"]);
  await heartbeat("h2");
  const h1 = await startHost("h1");
  await announce("h2", "192.168.77.12", ["10.1.0.2/32"]);
  await eventually(() => expect(trellisRoutes(h1.netns)).toHaveLength(1));
  return h1;
}

function trellisRoutes(netns: string): string[] {
  return ip(netns, "route", "show", "proto", "210").trim().split("\n").filter(Boolean).map((line) => line.trim());
}

/** Until `check` passes (it asserts, and throws until then). */
async function eventually(check: () => void, timeoutMs = 5000): Promise<void> {
  await eventuallyValue("the routes to be as expected", check, () => true, timeoutMs);
}

describe("route installer", () => {
  it("installs an announced prefix on other hosts and upstreams, and removes it on withdraw", async () => {
    await desire("h1", []);
    await desire("h2", ["10.1.0.2/16", "10.1.0.5/16"]);
    await heartbeat("h2");
    const h1 = await startHost("h1");
    const u1 = await startHost("u1", "upstream");
    const h2 = await startHost("h2");

    await announce("h2", "192.168.77.12", ["10.1.0.2/32", "10.1.0.5/32"]);
    const both = ["10.1.0.2 via 192.168.77.12 dev ul0", "10.1.0.5 via 192.168.77.12 dev ul0"];
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual(both));
    await eventually(() => expect(trellisRoutes(u1.netns)).toEqual(both));
    expect(trellisRoutes(h2.netns)).toEqual([]);

    await announce("h2", "192.168.77.12", ["10.1.0.5/32"]);
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual(["10.1.0.5 via 192.168.77.12 dev ul0"]));
    await buckets.routes.delete("h2");
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual([]));
    await eventually(() => expect(trellisRoutes(u1.netns)).toEqual([]));
  });

  it("withdraws the routes of a host whose heartbeat is stale, and restores them when it returns", async () => {
    const h1 = await h1WithRouteFromH2();

    const silentFrom = Date.now();
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual([]), 3 * STALE_AFTER_MS);
    expect(Date.now() - silentFrom).toBeLessThan(STALE_AFTER_MS + 500);
    expect(logs.some((line) => line.startsWith("host h2 has not heartbeaten"))).toBe(true);

    await heartbeat("h2");
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual(["10.1.0.2 via 192.168.77.12 dev ul0"]), 1000);
  });

  it("never touches routes of other protocols", async () => {
    await desire("h1", []);
    await desire("h2", ["10.1.0.2/16", "10.1.0.3/16"]);
    await heartbeat("h2");
    const h1 = await startHost("h1");
    ip(h1.netns, "route", "add", "10.1.0.2/32", "via", "192.168.77.50", "proto", "static");
    ip(h1.netns, "route", "add", "10.9.0.0/16", "via", "192.168.77.1", "proto", "boot");
    const before = ip(h1.netns, "route", "show");

    await announce("h2", "192.168.77.12", ["10.1.0.2/32", "10.1.0.3/32"]);
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual(["10.1.0.3 via 192.168.77.12 dev ul0"]));
    expect(ip(h1.netns, "route", "show", "10.1.0.2/32")).toContain("via 192.168.77.50 dev ul0 proto static");
    // Only the kernel's refusal of the add tells the installer that someone else owns the prefix.
    await eventually(() => expect(logs).toContain("route 10.1.0.2/32 left alone: the kernel already has it with protocol 4, which Trellis does not own"));

    await buckets.routes.delete("h2");
    await eventually(() => expect(trellisRoutes(h1.netns)).toEqual([]));
    expect(ip(h1.netns, "route", "show")).toBe(before);
  });

  it("refuses and logs a prefix that IPAM did not give to the announcing host", async () => {
    await desire("h1", ["10.1.0.1/16"]);
    await desire("h2", ["10.1.0.2/16"]);
    await desire("h3", []);
    await heartbeat("h1");
    await heartbeat("h2");
    const h3 = await startHost("h3");
    await announce("h1", "192.168.77.11", ["10.1.0.1/32"]);
    await eventually(() => expect(trellisRoutes(h3.netns)).toEqual(["10.1.0.1 via 192.168.77.11 dev ul0"]));

    // h2 claims h1's address, and a whole /16 nobody gave it.
    await announce("h2", "192.168.77.12", ["10.1.0.2/32", "10.1.0.1/32", "10.1.0.0/16"]);
    await eventually(() => expect(trellisRoutes(h3.netns)).toEqual(["10.1.0.1 via 192.168.77.11 dev ul0", "10.1.0.2 via 192.168.77.12 dev ul0"]));
    expect(logs).toContain("refused announcement of 10.1.0.1/32 (network l3net) by host h2: IPAM has not given 10.1.0.1/32 to host h2 in network l3net");
    expect(logs).toContain("refused announcement of 10.1.0.0/16 (network l3net) by host h2: IPAM has not given 10.1.0.0/16 to host h2 in network l3net");
    // What the agent's metrics say of it (h3's is the only installer running).
    const gauge = async (name: string) => (await agentRegistry.getSingleMetric(name)!.get()).values.map(({ value }) => value);
    expect([await gauge("trellis_agent_routes_installed"), await gauge("trellis_agent_refused_announcements")]).toEqual([[2], [2]]);
  });

  it("a restarted installer changes no route that is already right", async () => {
    const h1 = await h1WithRouteFromH2();

    const monitor = spawn("ip", ["-n", h1.netns, "monitor", "route"], { stdio: ["ignore", "pipe", "ignore"] });
    let changes = "";
    monitor.stdout.on("data", (chunk: Buffer) => (changes += chunk.toString()));
    await new Promise((resolve) => setTimeout(resolve, 200));
    await installers.pop()!.stop();
    const again = await startHost("h1", "host", h1.netns);
    await again.installer.settled();
    await new Promise((resolve) => setTimeout(resolve, 200));
    monitor.kill();
    expect(changes).toBe("");
    expect(trellisRoutes(h1.netns)).toEqual(["10.1.0.2 via 192.168.77.12 dev ul0"]);
  });
});

describe("batched route changes", () => {
  it("applies many changes across datagrams, in order, and reports exactly the refused ones", async () => {
    const netns = `trt-batch-${randomBytes(3).toString("hex")}`;
    namespaces.push(netns);
    await createNamespace(netns);
    ip(netns, "link", "add", "ul0", "type", "veth", "peer", "name", "ul1");
    ip(netns, "addr", "add", "192.168.77.1/24", "dev", "ul0");
    ip(netns, "link", "set", "ul1", "up");
    ip(netns, "link", "set", "ul0", "up");
    ip(netns, "route", "add", "10.3.0.7/32", "via", "192.168.77.50", "proto", "static");
    const nl = await openNetlink(netns);
    try {
      const dst = (i: number) => `10.3.${i >> 8}.${i & 255}/32`;
      const adds: RouteChange[] = Array.from({ length: 1000 }, (_, i) => ({ action: "add", route: { dst: dst(i), gateway: "192.168.77.12" } }));
      const failures = await nl.changeRoutes([
        ...adds,
        { action: "add", route: { dst: "10.4.0.0/16", gateway: "10.99.0.1" } },
        { action: "delete", route: { dst: dst(999), gateway: "192.168.77.12" } },
        { action: "replace", route: { dst: dst(998), gateway: "192.168.77.13" } },
        { action: "add", route: { dst: "10.5.0.0/16", gateway: "nope" } },
      ]);
      expect(failures.map(({ change, error }) => `${change.action} ${change.route.dst} ${error.code}`).sort()).toEqual([
        "add 10.3.0.7/32 EEXIST",
        "add 10.4.0.0/16 ENETUNREACH",
        "add 10.5.0.0/16 EINVAL",
      ]);
      const routes = trellisRoutes(netns);
      expect(routes).toHaveLength(998);
      expect(routes).toContain("10.3.3.230 via 192.168.77.13 dev ul0");
      expect(routes).not.toContain("10.3.3.231 via 192.168.77.12 dev ul0");
      expect(ip(netns, "route", "show", "10.3.0.7/32")).toContain("via 192.168.77.50 dev ul0 proto static");
      expect((await nl.listRoutes(4)).filter((route) => route.protocol === 210)).toHaveLength(998);
    } finally {
      nl.close();
    }
  });
});
