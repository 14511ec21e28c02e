import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, desiredKey, nameKey } from "../../libs/bus/subjects.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import { parsePrefix } from "../../libs/ipmath/index.js";
import { createNamespace, deleteNamespace } from "../../libs/netlink/index.js";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { BlockRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, Network, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../../libs/proto/gen/trellis/v1/routes.js";
import { HostRecord, NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import { blockKey } from "../../services/ipam/keys.js";
import { DesiredState } from "../../services/link-agent/desired.js";
import { RouteInstaller } from "../../services/link-agent/routes/install.js";
import { eventually } from "../support/eventually.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";
import { startService, type ServiceProcess } from "../support/trellis-service.js";

// "No value a peer wrote can take an agent down": garbage and malformed-but-decodable values in every bucket an
// agent, the planner or IPAM follows, with real `trellis ipam` and `trellis planner` processes, and an agent's
// readers (its desired state and its route installer, programming a namespace of its own) in this process.
// Afterwards all of them still run and converge: a later attach reaches the agent, a later announcement is
// installed, and each bad value was logged once, with its bucket and key.

const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);
const hostCodec = codecOf(HostRecord);
const announcementCodec = codecOf(RouteAnnouncement);
const blockCodec = codecOf(BlockRecord);
const garbage = () => Uint8Array.from([0xff, 0xff, 0xff, 0xff, 0xff, 0x0f]);

let nats: NatsServer;
let nc: NatsConnection;
let ipam: ServiceProcess;
let planner: ServiceProcess;
let control: ControlClient;
let kv: Record<keyof typeof Buckets, KV>;
let netns: string;
let installer: RouteInstaller | undefined;
let desired: DesiredState | undefined;
const logs: string[] = [];
const serviceLines: string[] = [];

const heartbeat = (host: string, overrides: Partial<HostRecord> = {}) =>
  hostCodec.encode(HostRecord.fromPartial({ host, address: "", role: "host", heartbeatAt: new Date().toISOString(), heartbeatIntervalMs: 60_000, ...overrides }));
const announcement = (host: string, nextHops: string[], prefixes: string[], networkId: string) =>
  announcementCodec.encode({ host, nextHops, prefixes: prefixes.map((prefix) => ({ networkId, prefix })), generation: 1, announcedAt: "" });

function trellisRoutes(): string[] {
  return execFileSync("ip", ["-n", netns, "route", "show", "proto", "210"], { encoding: "utf8" }).trim().split("\n").filter(Boolean).map((line) => line.trim());
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectBus({ servers: nats.url, name: "bad-values-test" });
  const opened = await Promise.all(Object.entries(Buckets).map(async ([name, bucket]) => [name, await openBucket(nc, bucket)] as const));
  kv = Object.fromEntries(opened) as typeof kv;
  ipam = await startService("ipam", ["--nats", nats.url, "--listen", "127.0.0.1:0"], { onLine: (line) => serviceLines.push(`ipam: ${line}`) });
  planner = await startService("planner", ["--nats", nats.url, "--listen", "127.0.0.1:0", "--ipam", ipam.address], { onLine: (line) => serviceLines.push(`planner: ${line}`) });
  control = new ControlClient(planner.address, insecure(), clientOptions);
  await kv.hosts.put("h1", heartbeat("h1", { address: "192.168.77.11" }));
  await kv.hosts.put("h2", heartbeat("h2", { address: "192.168.77.12" }));
  netns = `trt-badval-${randomBytes(3).toString("hex")}`;
  await createNamespace(netns);
  for (const args of [["link", "add", "ul0", "type", "veth", "peer", "name", "ul1"], ["addr", "add", "192.168.77.11/24", "dev", "ul0"], ["link", "set", "ul1", "up"], ["link", "set", "ul0", "up"]]) {
    execFileSync("ip", ["-n", netns, ...args]);
  }
}, 60_000);

afterAll(async () => {
  desired?.stop();
  await installer?.stop();
  control?.close();
  await planner?.stop();
  await ipam?.stop();
  await nc?.close();
  await nats?.stop();
  if (netns) await deleteNamespace(netns);
});

describe("bad values in every bucket", () => {
  it("are logged once each and ignored; planner, IPAM and the agent's readers go on converging", async () => {
    await callUnary(control.createNetwork.bind(control), {
      intentId: "",
      spec: NetworkSpec.fromPartial({ name: "l3net", driver: "ipvlan", subnets: ["10.1.0.0/16"], options: { parent: "eth0", ipvlan_mode: "l3" } }),
    });
    const l3net = networkCodec.decode((await kv.networks.get("l3net"))!.value);

    // Peers' writes: garbage, and values that decode but cannot be meant.
    const bad: [keyof typeof Buckets, string, Uint8Array][] = [
      ["routes", "h7", garbage()],
      ["routes", "h8", announcement("h2", ["192.168.77.18"], ["10.1.0.2/32"], l3net.id)], // names another host
      ["routes", "h9", announcement("h9", ["not-an-address"], ["10.1.9.0/26"], l3net.id)],
      ["routes", "h10", new Uint8Array(300 * 1024).fill(0x0a)],
      ["hosts", "h7", garbage()],
      ["hosts", "h8", heartbeat("h9")],
      ["hosts", "h9", heartbeat("h9", { heartbeatAt: "yesterday" })],
      ["networks", "junk", garbage()],
      ["networks", "other", networkCodec.encode({ ...l3net, name: "l3net" })],
      ["networks", "badsubnet", networkCodec.encode({ ...l3net, name: "badsubnet", subnets: [{ cidr: "10.1.0.0/99", gateway: "", ipv6: false, ipRange: "", auxAddresses: {} }] })],
      ["networks", "badparent", networkCodec.encode({ ...l3net, name: "badparent", parent: { ...l3net.parent!, name: "../../etc" } })],
      ["desired", desiredKey("h1", "garbage0"), garbage()],
      ["desired", desiredKey("h1", "badaddr0"), endpointCodec.encode(Endpoint.fromPartial({ id: "badaddr0", networkId: l3net.id, container: "x", host: "h1", netns: "x@h1", ifname: "eth0", addresses: ["10.1.0.300/16"] }))],
      ["desired", desiredKey("h1", "badnetns"), endpointCodec.encode(Endpoint.fromPartial({ id: "badnetns", networkId: l3net.id, container: "y", host: "h1", netns: "../../y", ifname: "eth0", addresses: ["10.1.0.77/16"] }))],
      ["endpoints", "garbage", garbage()],
      ["names", nameKey(l3net.id, "garbage"), garbage()],
      ["names", nameKey(l3net.id, "evil"), nameCodec.encode({ networkId: l3net.id, name: "evil\n10.9.9.9 c1", addresses: ["10.1.0.99"] })],
      ["names", nameKey(l3net.id, "badaddr"), nameCodec.encode({ networkId: l3net.id, name: "badaddr", addresses: ["10.1.0.999"] })],
      ["ipam", blockKey(l3net.id, parsePrefix("10.1.7.0/26")), garbage()],
    ];
    for (const [bucket, key, value] of bad) await kv[bucket].put(key, value);

    // The agent's readers start on that state, and more of it arrives while they run.
    installer = await RouteInstaller.start(
      { routes: kv.routes, hosts: kv.hosts, ipam: kv.ipam, networks: kv.networks },
      { host: "h1", role: "host", netns, staleAfterMs: 60_000, resyncMs: 60_000, log: (line) => logs.push(line) },
    );
    let changes = 0;
    const names = new Map<string, string>();
    const namesListener = { put: (_: string, key: string, entry: { name: string }) => void names.set(key, entry.name), delete: (_: string, key: string) => void names.delete(key), dropNetwork: () => names.clear() };
    desired = await DesiredState.start({ networks: kv.networks, desired: kv.desired, names: kv.names }, "h1", () => changes++, (line) => logs.push(line), namesListener);
    for (const [bucket, key, value] of bad) await kv[bucket].put(key, value);
    await kv.routes.put("h2", announcement("h2", ["192.168.77.12"], ["10.1.0.0/99", "garbage", "fd00::/64", "10.1.0.2/32"], l3net.id));

    // A later attach works: the planner wrote it, the agent's desired state has it, with its name.
    const c1 = await callUnary(control.attachEndpoint.bind(control), { intentId: "", spec: { network: "l3net", container: "c1", host: "h1", ipv4: "", ipv6: "" } });
    expect(c1.addresses).toEqual([expect.stringMatching(/^10\.1\.0\.\d+\/16$/)]);
    await eventually("c1 in h1's desired state", () => desired!.endpoints().map((e) => e.container), (containers) => containers.join() === "c1");
    await eventually("c1's name", () => [...names.values()], (seen) => seen.join() === "c1");
    expect(desired.networks().map((n) => n.name)).toEqual(["l3net"]);

    // A later announcement is installed, its good prefix only, once IPAM has given it (h2's borrowed address).
    const c2 = await callUnary(control.attachEndpoint.bind(control), { intentId: "", spec: { network: "l3net", container: "c2", host: "h2", ipv4: "", ipv6: "" } });
    const block = await eventually("h2's block", async () => {
      for await (const key of await kv.ipam.keys("block.>")) {
        const value = (await kv.ipam.get(key))!.value;
        if (value.length === garbage().length) continue; // the garbage written above
        const record = blockCodec.decode(value);
        if (record.host === "h2") return record.cidr;
      }
      return undefined;
    }, (cidr) => cidr !== undefined);
    await kv.routes.put("h2", announcement("h2", ["192.168.77.12"], ["10.1.0.0/99", "garbage", "fd00::/64", block!], l3net.id));
    await eventually("h2's route", trellisRoutes, (routes) => routes.some((route) => route.startsWith(`${block!.replace(/\/32$/, "")} via 192.168.77.12 dev ul0`)));
    expect(trellisRoutes().some((route) => route.includes("192.168.77.18") || route.includes("10.1.9.0"))).toBe(false);
    expect(c2.addresses).toEqual([expect.stringMatching(/^10\.1\./)]);

    // Each bad value logged once by each of the agent's readers of its bucket (networks: desired state and installer).
    for (const [bucket, key] of bad) {
      if (bucket === "endpoints") continue; // the planner's and IPAM's, below
      const lines = logs.filter((line) => line.startsWith(`ignored key ${key} of ${Buckets[bucket]}: `));
      expect(lines.length, `${bucket} ${key}:\n${logs.join("\n")}`).toBe(bucket === "networks" ? 2 : 1);
    }

    // Planner and IPAM still run, and still answer.
    for (const service of [planner, ipam]) expect(() => process.kill(service.pid, 0)).not.toThrow();
    const listed = await callUnary(control.listEndpoints.bind(control), { network: "", pageToken: "", pageSize: 0 });
    expect(listed.endpoints.map((e) => e.container).sort()).toEqual(["c1", "c2"]);
    expect(serviceLines.join("\n")).toMatch(/ignored key garbage of trellis-endpoints/);
  }, 60_000);
});
