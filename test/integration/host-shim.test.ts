import type { KV } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, hostShimKey } from "../../libs/bus/subjects.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import { AddressKind, IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { HostShim, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { startIpamService, type RunningIpamService } from "../../services/ipam/main.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { eventually } from "../support/eventually.js";
import { runTrellis } from "../support/trellis-cli.js";

// The planner's side of -o host_shim=true: a host's shim address is taken from IPAM at its first container on
// the network, kept in one desired key under the host, shown by inspect, kept from the leak collector, and gone
// with the network. The kernel's side is the lab's (test/lab/host-shim.test.ts).

const REPAIR_INTERVAL_MS = 300;
const GRACE_MS = 200;

let plane: ControlPlane;
let collectingIpam: RunningIpamService;
let ipam: IpamClient;
let desired: KV;
let cli: (...args: string[]) => ReturnType<typeof runTrellis>;

const create = (name: string, subnet: string, options: Record<string, string>, ipv6 = false) =>
  callUnary(plane.control.createNetwork.bind(plane.control), {
    intentId: "",
    spec: NetworkSpec.fromPartial({ name, subnets: [subnet], options, ipv6 }),
  });
const attach = (container: string, network: string, host: string) =>
  callUnary(plane.control.attachEndpoint.bind(plane.control), { intentId: "", spec: { network, container, host, ipv4: "", ipv6: "" } });
const detach = (container: string) => callUnary(plane.control.detachEndpoint.bind(plane.control), { intentId: "", container });
const inspect = (name: string) => callUnary(plane.control.inspectNetwork.bind(plane.control), { name });
/** The network's addresses held for endpoints (containers and shims), without prefix length. */
const allocations = async (networkId: string) =>
  (await callUnary(ipam.listAllocations.bind(ipam), { networkId })).allocations
    .filter((a) => a.kind === AddressKind.ADDRESS_KIND_ENDPOINT)
    .map((a) => a.address.split("/")[0]!);
const shimOf = async (host: string, networkId: string) => {
  const entry = await desired.get(hostShimKey(host, networkId));
  return entry?.operation === "PUT" ? { revision: entry.revision, shim: codecOf(HostShim).decode(entry.value) } : undefined;
};

beforeAll(async () => {
  plane = await startControlPlane({ repairIntervalMs: REPAIR_INTERVAL_MS });
  // A second IPAM replica that collects leaks: a shim has no container key, and must not be taken for a leak.
  collectingIpam = await startIpamService({
    natsUrl: plane.nats.url,
    listen: "127.0.0.1:0",
    log: () => undefined,
    collectLeaks: { graceMs: GRACE_MS, hostTimeoutMs: 30_000, intervalMs: 50 },
  });
  ipam = new IpamClient(plane.ipam.address, insecure(), clientOptions);
  await plane.registerHost("h1", "192.168.1.11");
  await plane.registerHost("h2", "192.168.1.12");
  desired = await openBucket(plane.nc, Buckets.desired);
  cli = (...args) => runTrellis({ TRELLIS_PLANNER_ADDR: plane.planner.address }, ...args);
});

afterAll(async () => {
  ipam?.close();
  await collectingIpam?.stop();
  await plane?.stop();
});

describe("host shims in the control plane", () => {
  it("refuses a bad host_shim value at create, saying what is valid, and creates nothing", async () => {
    for (const value of ["yes", "1", "TRUE"]) {
      const result = await cli("network", "create", "--subnet=10.97.0.0/24", "-o", `host_shim=${value}`, "badshim");
      expect(result.code).toBe(1);
      expect(result.stderr).toContain(`invalid host_shim "${value}": must be true or false`);
    }
    expect((await cli("network", "ls")).stdout).not.toContain("badshim");
    expect((await cli("network", "inspect", "badshim")).stderr).toContain("network badshim not found");
    // The subnet is still free: nothing of the refused creates was kept.
    expect((await cli("network", "create", "--subnet=10.97.0.0/24", "freecheck")).code).toBe(0);
    expect((await cli("network", "rm", "freecheck")).code).toBe(0);
  });

  it("names host_shim among the valid options when an unknown one is given", async () => {
    const result = await cli("network", "create", "-o", "host_shm=true", "typo");
    expect(result.stderr).toContain(`unknown option "host_shm": valid options are parent, ipvlan_mode, ipvlan_flag, ipv4_block_prefix, ipv6_block_prefix, host_shim`);
  });

  it("gives a host its shim at its first container on the network, once, and shows it in inspect", async () => {
    const network = await create("shimnet", "10.98.0.0/24", { host_shim: "true" });
    expect(network.hostShim).toBe(true);
    expect(await shimOf("h1", network.id)).toBeUndefined();
    expect((await inspect("shimnet")).hostShims).toEqual([]);

    const c1 = await attach("s1", "shimnet", "h1");
    const first = await shimOf("h1", network.id);
    expect(first?.shim).toMatchObject({ networkId: network.id, networkName: "shimnet", host: "h1" });
    expect(first!.shim.addresses).toHaveLength(1);
    expect(first!.shim.addresses[0]).toMatch(/^10\.98\.0\.\d+\/24$/);
    expect(first!.shim.addresses).not.toEqual(c1.addresses);

    const c2 = await attach("s2", "shimnet", "h1");
    expect(await shimOf("h1", network.id)).toEqual(first);
    expect(c2.addresses).not.toEqual(first!.shim.addresses);

    await attach("s3", "shimnet", "h2");
    const onH2 = await shimOf("h2", network.id);
    expect(onH2!.shim.addresses[0]).not.toBe(first!.shim.addresses[0]);

    const inspected = await inspect("shimnet");
    expect(inspected.hostShims.map((s) => [s.host, s.addresses])).toEqual([
      ["h1", first!.shim.addresses],
      ["h2", onH2!.shim.addresses],
    ]);
    // What a user sees: inspect's JSON names each host's shim address.
    const shown = JSON.parse((await cli("network", "inspect", "shimnet")).stdout) as { hostShims: { host: string; addresses: string[] }[] }[];
    expect(shown[0]!.hostShims).toEqual([
      expect.objectContaining({ host: "h1", addresses: first!.shim.addresses }),
      expect.objectContaining({ host: "h2", addresses: onH2!.shim.addresses }),
    ]);
    // Held in IPAM like any address: three containers and two shims.
    expect(await allocations(network.id)).toHaveLength(5);
  });

  it("keeps the shim's addresses from the leak collector", async () => {
    const network = await inspect("shimnet");
    await new Promise((resolve) => setTimeout(resolve, GRACE_MS * 5));
    const held = await allocations(network.id);
    for (const shim of network.hostShims) expect(held).toContain(shim.addresses[0]!.split("/")[0]);
  });

  it("keeps a host's shim when its last container leaves, and removes every shim with the network", async () => {
    const network = await inspect("shimnet");
    await Promise.all(["s1", "s2", "s3"].map(detach));
    expect((await inspect("shimnet")).hostShims).toHaveLength(2);
    expect(await allocations(network.id)).toHaveLength(2);

    expect((await cli("network", "rm", "shimnet")).code).toBe(0);
    for (const host of ["h1", "h2"]) {
      await eventually(`the repair pass to remove ${host}'s shim key`, () => shimOf(host, network.id), (shim) => shim === undefined);
    }
    // Made again under the same name, the network is a new one: no shim until a container comes.
    const again = await create("shimnet", "10.98.0.0/24", { host_shim: "true" });
    expect((await inspect("shimnet")).hostShims).toEqual([]);
    await attach("s4", "shimnet", "h1");
    expect((await shimOf("h1", again.id))!.shim.addresses).toHaveLength(1);
    await detach("s4");
    await callUnary(plane.control.deleteNetwork.bind(plane.control), { intentId: "", name: "shimnet" });
  });

  it("gives a dual-stack network's shim an address of each family, and a network without host_shim none", async () => {
    const dual = await create("shim6", "10.99.0.0/24", { host_shim: "true", ipvlan_mode: "l3" }, true);
    await attach("d1", "shim6", "h1");
    const shim = (await shimOf("h1", dual.id))!.shim;
    expect(shim.addresses).toHaveLength(2);
    expect(shim.addresses[0]).toMatch(/^10\.99\.0\.\d+\/24$/);
    expect(shim.addresses[1]).toMatch(/:.*\/\d+$/);

    const plain = await create("noshim", "10.100.0.0/24", {});
    await attach("p1", "noshim", "h1");
    expect(plain.hostShim).toBe(false);
    expect(await shimOf("h1", plain.id)).toBeUndefined();
    expect((await inspect("noshim")).hostShims).toEqual([]);
  });
});
