import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { codecOf } from "../../libs/bus/codec.js";
import { BusContact } from "../../libs/bus/contact.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { createNamespace, deleteNamespace } from "../../libs/netlink/index.js";
import { parsePrefix } from "../../libs/ipmath/index.js";
import { BlockRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../../libs/proto/gen/trellis/v1/routes.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { blockKey } from "../../services/ipam/keys.js";
import { RouteInstaller } from "../../services/link-agent/routes/install.js";
import { hostPrefix } from "../../services/link-agent/routes/prefixes.js";
import { eventually } from "../support/eventually.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

// "The dataplane outlives the control plane": a real route installer in a namespace of its own, on a real
// nats-server that is frozen (SIGSTOP) for longer than the heartbeat window, then killed and started again on
// the same store. Peers' heartbeats and announcements are written by the test, through the same server.

const WINDOW_MS = 2_000;
const HEARTBEAT_MS = 300;
const FREEZE_MS = 3 * WINDOW_MS;
const L3NET = "l3net";
const networkCodec = codecOf(Network);
const blockCodec = codecOf(BlockRecord);
const hostCodec = codecOf(HostRecord);
const announcementCodec = codecOf(RouteAnnouncement);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

let nats: NatsServer;
let writerNc: NatsConnection;
let installerNc: NatsConnection;
let contact: BusContact;
let installer: RouteInstaller;
let netns: string;
const logs: string[] = [];
const heartbeating = new Set<string>();
let beating: NodeJS.Timeout | undefined;

function ip(...args: string[]): string {
  return execFileSync("ip", ["-n", netns, ...args], { encoding: "utf8" });
}

function trellisRoutes(): string[] {
  return ip("route", "show", "proto", "210").trim().split("\n").filter(Boolean).map((line) => line.trim());
}

async function peer(kvs: Record<"routes" | "ipam", KV>, host: string, address: string, nextHop: string): Promise<void> {
  const cidr = hostPrefix(address);
  await kvs.ipam.put(blockKey(L3NET, parsePrefix(cidr)), blockCodec.encode(BlockRecord.fromPartial({ networkId: L3NET, host, cidr, borrowed: true })));
  const announcement = { host, nextHops: [nextHop], prefixes: [{ networkId: L3NET, prefix: cidr }], generation: 1, announcedAt: "" };
  await kvs.routes.put(host, announcementCodec.encode(announcement));
}

/**
 * Each host in `heartbeating` writes its heartbeat every HEARTBEAT_MS, as an agent does: on a timer, not after the
 * last write returned (a write to a frozen server hangs until it times out).
 */
function heartbeatLoop(hosts: KV): NodeJS.Timeout {
  return setInterval(() => {
    for (const host of heartbeating) {
      const record = { host, address: "", role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: HEARTBEAT_MS };
      hosts.put(host, hostCodec.encode(record)).catch(() => undefined);
    }
  }, HEARTBEAT_MS);
}

beforeAll(async () => {
  nats = await startNatsServer();
  writerNc = await connectBus({ servers: nats.url, name: "outage-writer" });
  installerNc = await connectBus({ servers: nats.url, name: "outage-installer" });
  const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((b) => openBucket(writerNc, b)));
  await networks.put(L3NET, networkCodec.encode(Network.fromPartial({ id: L3NET, name: L3NET, driver: "ipvlan", mode: "l3", flag: "bridge" })));
  heartbeating.add("h1").add("h2").add("h3");
  beating = heartbeatLoop(hosts);
  await peer({ routes, ipam }, "h2", "10.1.0.2/16", "192.168.77.12");
  await peer({ routes, ipam }, "h3", "10.1.0.3/16", "192.168.77.13");

  netns = `trt-outage-${randomBytes(3).toString("hex")}`;
  await createNamespace(netns);
  ip("link", "add", "ul0", "type", "veth", "peer", "name", "ul1");
  ip("addr", "add", "192.168.77.11/24", "dev", "ul0");
  ip("link", "set", "ul1", "up");
  ip("link", "set", "ul0", "up");
  contact = new BusContact(installerNc, { probeEveryMs: 100, cutOffAfterMs: 500 });
  const [iRoutes, iHosts, iIpam, iNetworks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((b) => openBucket(installerNc, b)));
  installer = await RouteInstaller.start(
    { routes: iRoutes, hosts: iHosts, ipam: iIpam, networks: iNetworks },
    { host: "h1", role: "host", netns, staleAfterMs: WINDOW_MS, resyncMs: 500, log: (line) => logs.push(line), contact },
  );
}, 30_000);

afterAll(async () => {
  clearInterval(beating);
  nats?.thaw();
  await installer?.stop();
  contact?.stop();
  await installerNc?.close();
  await writerNc?.close();
  await nats?.stop();
  if (netns) await deleteNamespace(netns);
});

describe("a route installer while NATS is frozen, then killed and started again", () => {
  it("withdraws nothing and changes no route, gives every host a whole window from the return, and follows the buckets again", async () => {
    const both = ["10.1.0.2 via 192.168.77.12 dev ul0", "10.1.0.3 via 192.168.77.13 dev ul0"];
    await eventually("h2's and h3's routes", trellisRoutes, (routes) => JSON.stringify(routes) === JSON.stringify(both));
    const monitor = spawn("ip", ["-n", netns, "monitor", "route"], { stdio: ["ignore", "pipe", "ignore"] });
    // Trellis's own routes only: the kernel's link-local ones of the fresh veth come and go meanwhile.
    let changes = "";
    monitor.stdout.on("data", (chunk: Buffer) => (changes += chunk.toString().split("\n").filter((line) => line.includes("proto 210")).map((line) => `${line}\n`).join("")));
    await sleep(200);

    nats.freeze();
    await sleep(FREEZE_MS);
    expect(contact.inContact()).toBe(false);
    expect(trellisRoutes()).toEqual(both);
    // h3 dies during the outage: after the return it has a whole window, then its routes go.
    heartbeating.delete("h3");
    await nats.restart();
    const back = Date.now();
    await eventually("contact again", () => contact.inContact(), (inContact) => inContact, 10_000);
    await sleep(WINDOW_MS / 2);
    expect(trellisRoutes()).toEqual(both);
    expect(changes).toBe("");

    await eventually("h3's routes withdrawn", trellisRoutes, (routes) => routes.length === 1, 3 * WINDOW_MS);
    expect(Date.now() - back).toBeGreaterThanOrEqual(WINDOW_MS);
    expect(trellisRoutes()).toEqual(["10.1.0.2 via 192.168.77.12 dev ul0"]);
    monitor.kill();
    expect(changes.trim().split("\n")).toEqual([expect.stringMatching(/^Deleted 10\.1\.0\.3 via 192\.168\.77\.13 dev ul0 proto 210/)]);

    // The watches follow the restarted server: a new host's announcement is installed.
    const kvs = Object.fromEntries(await Promise.all((["routes", "ipam"] as const).map(async (b) => [b, await openBucket(writerNc, Buckets[b])]))) as Record<"routes" | "ipam", KV>;
    heartbeating.add("h4");
    await peer(kvs, "h4", "10.1.0.4/16", "192.168.77.14");
    await eventually("h4's route", trellisRoutes, (routes) => routes.includes("10.1.0.4 via 192.168.77.14 dev ul0"), 10_000);
    expect(logs).toContain("lost contact with NATS: no host's routes are withdrawn and no route is changed until it is back");
    expect(logs).toContain("contact with NATS is back: every host has a whole heartbeat window from now before its routes may be withdrawn");
  }, 60_000);
});
