import { status } from "@grpc/grpc-js";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { ensureIntentStream, openBucket } from "../../libs/bus/connection.js";
import { getValue } from "../../libs/bus/kv.js";
import { Buckets, desiredKey, INTENT_SUBJECT, nameKey } from "../../libs/bus/subjects.js";
import { headersWithTrace } from "../../libs/bus/trace.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import type { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, Network, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { Intent, IntentResult, NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import { startTracing, stopTracing, withSpan } from "../../libs/telemetry/tracing.js";
import type { RunningIpamService } from "../../services/ipam/main.js";
import { DEFAULT_INTENT_RETENTION_MS, type RunningPlanner } from "../../services/planner/main.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { eventually } from "../support/eventually.js";
import type { NatsServer } from "../support/nats-server.js";
import { runTrellis } from "../support/trellis-cli.js";

const spans = new InMemorySpanExporter();
let plane: ControlPlane;
let nats: NatsServer;
let nc: NatsConnection;
let ipam: RunningIpamService;
let planner: RunningPlanner;
let control: ControlClient;

function spec(name: string, overrides: Partial<NetworkSpec> = {}): NetworkSpec {
  return NetworkSpec.fromPartial({ name, driver: "ipvlan", ...overrides });
}

const createNetwork = (s: NetworkSpec, intentId = "") => callUnary(control.createNetwork.bind(control), { intentId, spec: s });
const listNames = async () => (await callUnary(control.listNetworks.bind(control), {})).networks.map((n) => n.name);
const attach = (container: string, network: string, host = "h1", ipv4 = "", ipv6 = "") =>
  callUnary(control.attachEndpoint.bind(control), { intentId: "", spec: { network, container, host, ipv4, ipv6 } });
const detach = (container: string) => callUnary(control.detachEndpoint.bind(control), { intentId: "", container });

/** The keys of one bucket that match a filter. */
async function keysOf(bucket: string, filter = ">"): Promise<string[]> {
  const keys: string[] = [];
  for await (const key of await (await openBucket(nc, bucket)).keys(filter)) keys.push(key);
  return keys.sort();
}

beforeAll(async () => {
  await startTracing({ serviceName: "control-api-test", exporter: spans });
  plane = await startControlPlane();
  ({ nats, nc, ipam, planner, control } = plane);
  await plane.registerHost("h1", "192.168.1.11");
  await plane.registerHost("h2", "192.168.1.12");
});

afterAll(async () => {
  await plane?.stop();
  await stopTracing();
});

describe("Control API over gRPC, with IPAM and NATS", () => {
  it("creates a network as the reference's db_net example, with mode, flag and gateway", async () => {
    const network = await createNetwork(spec("db_net", { subnets: ["192.168.1.0/24"], gateways: ["192.168.1.1"], options: { parent: "eth0" } }));
    expect(network).toMatchObject({ name: "db_net", mode: "l2", flag: "bridge", parent: { name: "eth0" } });
    expect(network.subnets).toEqual([{ cidr: "192.168.1.0/24", gateway: "192.168.1.1", ipv6: false, ipRange: "", auxAddresses: {} }]);
    const inspected = await callUnary(control.inspectNetwork.bind(control), { name: "db_net" });
    expect(inspected.id).toBe(network.id);
  });

  it("writes a network as one key, which every host's agent follows, and no host's desired state", async () => {
    const stored = await getValue(await openBucket(nc, Buckets.networks), codecOf(Network), "db_net");
    expect(stored?.value).toMatchObject({ name: "db_net", parent: { name: "eth0" }, deleting: false });
    expect(await keysOf(Buckets.desired)).toEqual([]);
  });

  it("refuses -o parent=eth0.5000 with a clear error and leaves the network list as it was", async () => {
    const before = await listNames();
    await expect(createNetwork(spec("bad", { options: { parent: "eth0.5000" } }))).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: "vlan id must be between 1-4094, received: 5000",
    });
    expect(await listNames()).toEqual(before);
  });

  it("refuses a duplicate network name", async () => {
    await expect(createNetwork(spec("db_net", { subnets: ["10.99.0.0/24"] }))).rejects.toMatchObject({
      code: status.ALREADY_EXISTS,
      details: "network with name db_net already exists",
    });
  });

  it("applies a replayed intent once and answers the same", async () => {
    const first = await createNetwork(spec("replayed", { subnets: ["10.20.0.0/24"] }), "intent-replay-1");
    const again = await createNetwork(spec("replayed", { subnets: ["10.20.0.0/24"] }), "intent-replay-1");
    expect(again.id).toBe(first.id);
    expect((await listNames()).filter((name) => name === "replayed")).toHaveLength(1);
  });

  it("answers a replay whose first outcome was never recorded (a planner cut off mid-intent) with what that intent made", async () => {
    const attachAs = (intentId: string) =>
      callUnary(control.attachEndpoint.bind(control), { intentId, spec: { network: "replayed", container: "lost", host: "h1", ipv4: "", ipv6: "" } });
    const network = await createNetwork(spec("lost_net", { subnets: ["10.21.0.0/24"] }), "intent-lost-net");
    const endpoint = await attachAs("intent-lost-attach");
    const intents = await openBucket(nc, Buckets.intents);
    for (const id of ["intent-lost-net", "intent-lost-attach"]) await intents.delete(id);

    expect((await createNetwork(spec("lost_net", { subnets: ["10.21.0.0/24"] }), "intent-lost-net")).id).toBe(network.id);
    expect(await attachAs("intent-lost-attach")).toEqual(endpoint);
    // Another intent for the same names is still refused.
    await expect(createNetwork(spec("lost_net", { subnets: ["10.21.0.0/24"] }), "intent-other")).rejects.toMatchObject({ code: status.ALREADY_EXISTS });
    await expect(attachAs("intent-other-attach")).rejects.toMatchObject({ code: status.ALREADY_EXISTS });
    const listed = await callUnary(control.listEndpoints.bind(control), { network: "replayed", pageToken: "", pageSize: 0 });
    expect(listed.endpoints.filter((e) => e.container === "lost").map((e) => e.id)).toEqual([endpoint.id]);
    await detach("lost");
  });

  it("runs concurrent replays of one intent once, and answers each with its outcome", async () => {
    const attachOnce = () =>
      callUnary(control.attachEndpoint.bind(control), { intentId: "intent-concurrent", spec: { network: "replayed", container: "twice", host: "h1", ipv4: "", ipv6: "" } });
    const answers = await Promise.all([attachOnce(), attachOnce(), attachOnce()]);
    expect(new Set(answers.map((answer) => answer.id)).size).toBe(1);
    const listed = await callUnary(control.listEndpoints.bind(control), { network: "replayed", pageToken: "", pageSize: 0 });
    expect(listed.endpoints.filter((e) => e.container === "twice")).toHaveLength(1);
    await detach("twice");
  });

  it("takes intents from the durable NATS stream too, once per id", async () => {
    await ensureIntentStream(nc, DEFAULT_INTENT_RETENTION_MS);
    const js = jetstream(nc);
    const intent: Intent = { id: "intent-nats-1", action: { $case: "createNetwork", value: spec("from_nats", { subnets: ["10.30.0.0/24"] }) } };
    for (let i = 0; i < 2; i++) await js.publish(INTENT_SUBJECT, codecOf(Intent).encode(intent), { headers: headersWithTrace() });
    const intents = await openBucket(nc, Buckets.intents);
    const result = await eventually("the result of intent-nats-1", () => getValue(intents, codecOf(IntentResult), "intent-nats-1"), (r) => r !== undefined);
    expect(result?.value).toMatchObject({ code: status.OK, network: { name: "from_nats" } });
    expect((await listNames()).filter((name) => name === "from_nats")).toHaveLength(1);
  });

  it("applies a create and the attaches on it published back to back in that order, the attaches side by side", async () => {
    const js = jetstream(nc);
    const intents: Intent[] = [
      { id: "stream-net", action: { $case: "createNetwork", value: spec("streamed", { subnets: ["10.31.0.0/24"] }) } },
      ...Array.from({ length: 20 }, (_, i): Intent => ({
        id: `stream-attach-${i}`,
        action: { $case: "attachEndpoint", value: { network: "streamed", container: `st${i}`, host: "h1", ipv4: "", ipv6: "" } },
      })),
    ];
    await Promise.all(intents.map((intent) => js.publish(INTENT_SUBJECT, codecOf(Intent).encode(intent))));
    const results = await openBucket(nc, Buckets.intents);
    for (const intent of intents) {
      const result = await eventually(`the result of ${intent.id}`, () => getValue(results, codecOf(IntentResult), intent.id), (r) => r !== undefined);
      expect(result?.value).toMatchObject({ code: status.OK, message: "" });
    }
    const listed = await callUnary(control.listEndpoints.bind(control), { network: "streamed", pageToken: "", pageSize: 0 });
    expect(new Set(listed.endpoints.map((e) => e.addresses[0])).size).toBe(20);
    for (let i = 0; i < 20; i++) await detach(`st${i}`);
  });

  it("attaches an endpoint: lowest free address, default route via the gateway, on its host only", async () => {
    const endpoint = await attach("ipv1", "db_net", "h1");
    expect(endpoint).toMatchObject({ host: "h1", netns: "ipv1@h1", ifname: "eth0", addresses: ["192.168.1.2/24"] });
    expect(endpoint.routes).toEqual([{ dst: "default", via: "192.168.1.1", ipv6: false }]);
    // One key under its host in the desired bucket, one name; nothing under any other host.
    expect(await keysOf(Buckets.desired)).toEqual([desiredKey("h1", endpoint.id)]);
    const stored = await getValue(await openBucket(nc, Buckets.desired), codecOf(Endpoint), desiredKey("h1", endpoint.id));
    expect(stored?.value).toEqual(endpoint);
    const name = await getValue(await openBucket(nc, Buckets.names), codecOf(NameEntry), nameKey(endpoint.networkId, "ipv1"));
    expect(name?.value).toEqual({ networkId: endpoint.networkId, name: "ipv1", addresses: ["192.168.1.2"] });
  });

  it("lists containers a page at a time, in name order, and inspects one by name", async () => {
    await createNetwork(spec("paged", { subnets: ["10.22.0.0/24"] }));
    for (const name of ["p3", "p1", "p5", "p2", "p4"]) await attach(name, "paged", "h2");
    const pages: string[][] = [];
    let pageToken = "";
    do {
      const page = await callUnary(control.listEndpoints.bind(control), { network: "paged", pageToken, pageSize: 2 });
      pages.push(page.endpoints.map((e) => e.container));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    expect(pages).toEqual([["p1", "p2"], ["p3", "p4"], ["p5"]]);
    const p4 = await callUnary(control.inspectEndpoint.bind(control), { container: "p4" });
    expect(p4).toMatchObject({ container: "p4", networkName: "paged", host: "h2" });
    await expect(callUnary(control.inspectEndpoint.bind(control), { container: "p9" })).rejects.toMatchObject({
      code: status.NOT_FOUND,
      details: "no such container: p9 (see trellis ps)",
    });
    for (const name of ["p1", "p2", "p3", "p4", "p5"]) await detach(name);
  });

  it("refuses bad attachments with what would be right", async () => {
    await expect(attach("ipv1", "db_net")).rejects.toMatchObject({ code: status.ALREADY_EXISTS, details: expect.stringContaining('container name "ipv1" is already in use') });
    await expect(attach("x", "nonet")).rejects.toMatchObject({ code: status.NOT_FOUND, details: expect.stringContaining("network nonet not found") });
    await expect(attach("x", "db_net", "h9")).rejects.toMatchObject({ code: status.NOT_FOUND, details: expect.stringContaining("known hosts are h1, h2") });
    await expect(attach("x", "db_net", "h1", "", "2001:db8::5")).rejects.toMatchObject({
      code: status.INVALID_ARGUMENT,
      details: expect.stringContaining("has no IPv6 subnet"),
    });
    await expect(attach("x", "db_net", "h1", "192.168.1.2")).rejects.toMatchObject({ code: status.ALREADY_EXISTS });
    const endpoints = (await callUnary(control.listEndpoints.bind(control), { network: "", pageToken: "", pageSize: 0 })).endpoints;
    expect(endpoints.map((e) => e.container)).toEqual(["ipv1"]);
  });

  it("refuses a second network on a parent with another ipvlan mode, naming the network already there", async () => {
    await expect(createNetwork(spec("l3_on_eth0", { subnets: ["10.50.0.0/24"], options: { parent: "eth0", ipvlan_mode: "l3" } }))).rejects.toMatchObject({
      code: status.FAILED_PRECONDITION,
      details: expect.stringContaining("parent eth0 is already used by network db_net in l2/bridge"),
    });
    const shared = await createNetwork(spec("l2_on_eth0", { subnets: ["10.51.0.0/24"], options: { parent: "eth0" } }));
    expect(shared.parent?.name).toBe("eth0");
  });

  it("refuses to remove a network that has containers, naming them", async () => {
    await expect(callUnary(control.deleteNetwork.bind(control), { intentId: "", name: "db_net" })).rejects.toMatchObject({
      code: status.FAILED_PRECONDITION,
      details: expect.stringContaining("network db_net has active endpoints: ipv1"),
    });
  });

  it("frees a static address the moment its container is removed (the reference's --ip6 bug)", async () => {
    await createNetwork(spec("v6net", { ipv6: true, subnets: ["2001:db8:abc6::/64"], options: { parent: "eth1", ipvlan_mode: "l3" } }));
    const first = await attach("s1", "v6net", "h1", "", "2001:db8:abc6::10");
    expect(first.addresses).toContain("2001:db8:abc6::10/64");
    expect(first.routes).toEqual([
      { dst: "default", via: "", ipv6: false },
      { dst: "default", via: "", ipv6: true },
    ]);
    await detach("s1");
    const second = await attach("s2", "v6net", "h1", "", "2001:db8:abc6::10");
    expect(second.addresses).toContain("2001:db8:abc6::10/64");
  });

  it("takes --ip-range and --aux-address from the CLI: automatic addresses only from the range, never the aux ones", async () => {
    const trellis = (...args: string[]) => runTrellis({ TRELLIS_PLANNER_ADDR: planner.address, TRELLIS_NATS_URL: nats.url }, ...args);
    const created = await trellis("network", "create", "--subnet=10.80.0.0/16", "--ip-range=10.80.5.8/29", "--aux-address", "router=10.80.5.9", "--aux-address", "nas=10.80.0.9", "ranged");
    expect(created).toMatchObject({ code: 0, stderr: "" });
    const inspected = await trellis("network", "inspect", "ranged");
    expect(JSON.parse(inspected.stdout)[0].subnets).toEqual([
      { cidr: "10.80.0.0/16", gateway: "10.80.0.1", ipRange: "10.80.5.8/29", auxAddresses: { router: "10.80.5.9", nas: "10.80.0.9" } },
    ]);
    const handedOut = [];
    for (let i = 0; i < 7; i++) handedOut.push(...(await attach(`r${i}`, "ranged")).addresses);
    expect(handedOut).toEqual(["10.80.5.8/16", "10.80.5.10/16", "10.80.5.11/16", "10.80.5.12/16", "10.80.5.13/16", "10.80.5.14/16", "10.80.5.15/16"]);
    await expect(attach("r7", "ranged")).rejects.toMatchObject({ code: status.RESOURCE_EXHAUSTED, details: "pool 10.80.5.8/29 is full" });
    // Static addresses may be anywhere in the subnet, as with docker: the range only bounds automatic ones.
    expect((await attach("outside", "ranged", "h1", "10.80.0.20")).addresses).toEqual(["10.80.0.20/16"]);
    await detach("r3");
    expect((await attach("r8", "ranged")).addresses).toEqual(["10.80.5.12/16"]);
  });

  it("cuts the per-host blocks of an l3 network to the asked sizes, from its ip range", async () => {
    const network = await createNetwork(
      spec("blocks", {
        subnets: ["10.81.0.0/16", "2001:db8:81::/64"],
        ipRanges: ["10.81.2.0/24"],
        options: { ipvlan_mode: "l3", ipv4_block_prefix: "28", ipv6_block_prefix: "120" },
      }),
    );
    expect([network.ipv4BlockPrefix, network.ipv6BlockPrefix]).toEqual([28, 120]);
    const inspected = await runTrellis({ TRELLIS_PLANNER_ADDR: planner.address }, "network", "inspect", "blocks");
    expect(JSON.parse(inspected.stdout)[0]).toMatchObject({ ipv4BlockPrefix: 28, ipv6BlockPrefix: 120, subnets: [{ ipRange: "10.81.2.0/24" }, {}] });
    await attach("b1", "blocks", "h1");
    await attach("b2", "blocks", "h2");
    const ipamClient = new IpamClient(ipam.address, insecure(), clientOptions);
    try {
      const { blocks } = await callUnary(ipamClient.listBlocks.bind(ipamClient), { networkId: network.id, host: "" });
      expect(blocks.map((b) => [b.cidr, b.host])).toEqual([
        ["10.81.2.0/28", "h1"],
        ["10.81.2.16/28", "h2"],
        ["2001:db8:81::/120", "h1"],
        ["2001:db8:81::100/120", "h2"],
      ]);
    } finally {
      ipamClient.close();
    }
  });

  it("joins planner and ipam spans to the caller's trace", async () => {
    await withSpan("test.caller", {}, () => createNetwork(spec("traced", { subnets: ["10.40.0.0/24"] })));
    const finished = spans.getFinishedSpans();
    const root = finished.find((s) => s.name === "test.caller")!;
    const trace = finished.filter((s) => s.spanContext().traceId === root.spanContext().traceId).map((s) => s.name);
    expect(trace).toEqual(expect.arrayContaining(["planner.network.create", expect.stringMatching(/^ipam\./)]));
  });
});
