import { status } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import type { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, Network, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import type { RunningPlanner } from "../../services/planner/main.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import type { NatsServer } from "../support/nats-server.js";
import { runTrellis } from "../support/trellis-cli.js";

// Principle 5: bad input gets a clear error and changes nothing. Each case asserts the message (what was
// wrong, what would be right) and that networks, containers, IPAM and every stored key are as before.

let plane: ControlPlane;
let nats: NatsServer;
let nc: NatsConnection;
let planner: RunningPlanner;
let control: ControlClient;
let ipam: IpamClient;

function spec(name: string, overrides: Partial<NetworkSpec> = {}): NetworkSpec {
  return NetworkSpec.fromPartial({ name, driver: "ipvlan", ...overrides });
}

const createNetwork = (s: NetworkSpec) => callUnary(control.createNetwork.bind(control), { intentId: "", spec: s });
const deleteNetwork = (name: string) => callUnary(control.deleteNetwork.bind(control), { intentId: "", name });
const attach = (container: string, network: string, ipv4 = "", ipv6 = "", host = "h1") =>
  callUnary(control.attachEndpoint.bind(control), { intentId: "", spec: { network, container, host, ipv4, ipv6 } });

/** What a user sees (network ls, ps, IPAM allocations) and every stored key, to compare before and after. */
async function world(): Promise<unknown> {
  const { networks } = await callUnary(control.listNetworks.bind(control), {});
  const { endpoints } = await callUnary(control.listEndpoints.bind(control), { network: "", pageToken: "", pageSize: 0 });
  const allocations = [];
  for (const network of networks) {
    allocations.push(...(await callUnary(ipam.listAllocations.bind(ipam), { networkId: network.id })).allocations);
  }
  return {
    networks: networks.map((n) => Network.toJSON(n)),
    endpoints: endpoints.map((e) => Endpoint.toJSON(e)),
    allocations,
    stored: await storedKeys(),
  };
}

async function storedKeys(): Promise<Record<string, string>> {
  const stored: Record<string, string> = {};
  for (const bucket of [Buckets.networks, Buckets.endpoints, Buckets.desired, Buckets.names, Buckets.ipam]) {
    const kv = await openBucket(nc, bucket);
    for await (const key of await kv.keys()) {
      const entry = await kv.get(key);
      if (entry?.operation === "PUT") stored[`${bucket}/${key}`] = Buffer.from(entry.value).toString("base64");
    }
  }
  return stored;
}

/** Runs a call that must fail, and checks it left everything as it was. */
async function refused(call: () => Promise<unknown>, code: status, details: string | RegExp): Promise<void> {
  const before = await world();
  const error = await call().then(
    () => undefined,
    (e: unknown) => e as { code: number; details: string },
  );
  expect(error, "the call should have failed").toBeDefined();
  expect({ code: status[error!.code], details: error!.details }).toEqual({
    code: status[code],
    details: typeof details === "string" ? details : expect.stringMatching(details),
  });
  expect(await world()).toEqual(before);
}

/** Hosts' heartbeats age: refreshed, so that the parent checks see them live. */
let heartbeats: NodeJS.Timeout;
const registerHosts = () =>
  Promise.all([
    plane.registerHost("h1", "192.168.1.11", { interfaces: ["eth0", "eth1", "lo"] }),
    plane.registerHost("h2", "192.168.1.12", { interfaces: ["eth1", "lo"] }),
  ]);

beforeAll(async () => {
  plane = await startControlPlane();
  ({ nats, nc, planner, control } = plane);
  ipam = new IpamClient(plane.ipam.address, insecure(), clientOptions);
  await registerHosts();
  heartbeats = setInterval(() => void registerHosts(), 2000);
  await createNetwork(spec("db_net", { subnets: ["192.168.1.0/24"], options: { parent: "eth0" } }));
  await createNetwork(spec("v6net", { ipv6: true, subnets: ["10.60.0.0/24", "2001:db8:abc9::/64"], options: { parent: "eth0.140" } }));
  await createNetwork(spec("aux_net", { subnets: ["10.70.0.0/24"], ipRanges: ["10.70.0.128/25"], auxAddresses: { router: "10.70.0.5" } }));
  await attach("ipv1", "db_net", "192.168.1.10");
  await attach("ipv2", "db_net");
  await attach("six1", "v6net", "", "2001:db8:abc9::51");
});

afterAll(async () => {
  clearInterval(heartbeats);
  ipam?.close();
  await plane?.stop();
});

describe("network create refuses bad input and changes nothing", () => {
  it.each(["10.1.0.0/33", "300.1.0.0/24", "10.1.0.0", "banana"])("an invalid CIDR (%s)", async (cidr) => {
    await refused(
      () => createNetwork(spec("bad", { subnets: [cidr] })),
      status.INVALID_ARGUMENT,
      `invalid subnet "${cidr}": expected a CIDR such as 192.168.1.0/24 or 2001:db8::/64`,
    );
  });

  it("a subnet with host bits set, suggesting the network address", async () => {
    await refused(
      () => createNetwork(spec("bad", { subnets: ["10.1.0.5/24"] })),
      status.INVALID_ARGUMENT,
      'invalid subnet "10.1.0.5/24": host bits are set; did you mean 10.1.0.0/24?',
    );
  });

  it("a gateway outside every subnet", async () => {
    await refused(
      () => createNetwork(spec("bad", { subnets: ["10.1.0.0/24"], gateways: ["10.9.9.1"] })),
      status.INVALID_ARGUMENT,
      "gateway 10.9.9.1 is not in any subnet of the network (subnets: 10.1.0.0/24)",
    );
  });

  it("two gateways for one subnet", async () => {
    await refused(
      () => createNetwork(spec("bad", { subnets: ["10.1.0.0/24"], gateways: ["10.1.0.1", "10.1.0.2"] })),
      status.INVALID_ARGUMENT,
      "subnet 10.1.0.0/24 has two gateways, 10.1.0.1 and 10.1.0.2: give at most one per subnet",
    );
  });

  it("a subnet overlapping another network's on the same parent, naming that network", async () => {
    await refused(
      () => createNetwork(spec("bad", { subnets: ["192.168.1.128/25"], options: { parent: "eth0" } })),
      status.FAILED_PRECONDITION,
      "subnet 192.168.1.128/25 overlaps subnet 192.168.1.0/24 of network db_net (parent eth0): subnets must not overlap across networks; choose another --subnet",
    );
  });

  it("an IPv6 subnet overlapping another network's", async () => {
    await refused(
      () => createNetwork(spec("bad", { subnets: ["2001:db8:abc9::/48"], options: { parent: "eth0.140" } })),
      status.FAILED_PRECONDITION,
      /^subnet 2001:db8:abc9::\/48 overlaps subnet 2001:db8:abc9::\/64 of network v6net \(parent eth0\.140\)/,
    );
  });

  it("a duplicate network name", async () => {
    await refused(
      () => createNetwork(spec("db_net", { subnets: ["10.2.0.0/24"] })),
      status.ALREADY_EXISTS,
      "network with name db_net already exists",
    );
  });

  it.each(["0", "4095", "5000", "abc"])("VLAN id %s, in the reference's words", async (id) => {
    await refused(
      () => createNetwork(spec("bad", { options: { parent: `eth0.${id}` } })),
      status.INVALID_ARGUMENT,
      `vlan id must be between 1-4094, received: ${id}`,
    );
  });

  it("an interface name longer than 15 characters", async () => {
    await refused(
      () => createNetwork(spec("bad", { options: { parent: "enp0s31f6verylong.20" } })),
      status.INVALID_ARGUMENT,
      'invalid parent "enp0s31f6verylong.20": interface names are at most 15 characters, this one has 20',
    );
  });

  it("a parent that no live host has, naming the hosts and the interfaces they do have", async () => {
    await refused(
      () => createNetwork(spec("b7", { subnets: ["10.80.0.0/24"], options: { parent: "nosuchif" } })),
      status.FAILED_PRECONDITION,
      "parent interface nosuchif exists on no live host: h1 has eth0, eth1, lo; h2 has eth1, lo; create it there first, or choose an interface they have with -o parent=",
    );
    await refused(
      () => createNetwork(spec("b7", { subnets: ["10.80.0.0/24"], options: { parent: "nosuchif.20" } })),
      status.FAILED_PRECONDITION,
      /^interface nosuchif, the base of parent nosuchif\.20, exists on no live host: h1 has eth0, eth1, lo; h2 has eth1, lo;/,
    );
  });

  it("a container on a host that lacks the network's parent, naming the hosts that have it", async () => {
    await refused(
      () => attach("elsewhere", "db_net", "", "", "h2"),
      status.FAILED_PRECONDITION,
      "host h2 has no interface eth0, the parent of network db_net (its interfaces: eth1, lo); choose a host that has it: h1",
    );
  });

  it("the loopback parent", async () => {
    await refused(
      () => createNetwork(spec("bad", { options: { parent: "lo" } })),
      status.INVALID_ARGUMENT,
      'invalid parent "lo": the loopback interface cannot be an ipvlan parent; use an Ethernet interface such as eth0',
    );
  });

  it("an unknown -o option, naming the valid ones", async () => {
    await refused(
      () => createNetwork(spec("bad", { options: { macvlan_mode: "bridge" } })),
      status.INVALID_ARGUMENT,
      'unknown option "macvlan_mode": valid options are parent, ipvlan_mode, ipvlan_flag, ipv4_block_prefix, ipv6_block_prefix, host_shim',
    );
  });

  it("a host_shim that is neither true nor false", async () => {
    await refused(
      () => createNetwork(spec("bad", { options: { host_shim: "yes" } })),
      status.INVALID_ARGUMENT,
      'invalid host_shim "yes": must be true or false (true gives each host an interface of its own on the network, to reach its containers)',
    );
  });

  it.each([
    ["ipvlan_mode", "l4", "l2, l3, l3s"],
    ["ipvlan_flag", "passthru", "bridge, private, vepa"],
  ])("an invalid %s (%s), naming the valid ones", async (option, value, valid) => {
    await refused(
      () => createNetwork(spec("bad", { options: { [option]: value } })),
      status.INVALID_ARGUMENT,
      `invalid ${option} "${value}": must be one of ${valid}`,
    );
  });

  it("another driver", async () => {
    await refused(
      () => createNetwork(spec("bad", { driver: "macvlan" })),
      status.INVALID_ARGUMENT,
      'driver "macvlan" is not supported: Trellis networks use the ipvlan driver',
    );
  });

  it.each([
    ["an ip range outside every subnet", { ipRanges: ["10.2.0.0/24"] }, "ip range 10.2.0.0/24 is not in any subnet of the network (subnets: 10.1.0.0/16)"],
    [
      "two ip ranges in one subnet",
      { ipRanges: ["10.1.5.0/24", "10.1.6.0/24"] },
      "subnet 10.1.0.0/16 has two ip ranges, 10.1.5.0/24 and 10.1.6.0/24: give at most one per subnet",
    ],
    ["an ip range with host bits set", { ipRanges: ["10.1.5.9/24"] }, 'invalid ip range "10.1.5.9/24": host bits are set; did you mean 10.1.5.0/24?'],
    [
      "an aux address outside every subnet",
      { auxAddresses: { router: "10.2.0.1" } },
      "aux address router=10.2.0.1 is not in any subnet of the network (subnets: 10.1.0.0/16)",
    ],
    ["two aux addresses on one address", { auxAddresses: { a: "10.1.5.1", b: "10.1.5.1" } }, "aux addresses a and b are both 10.1.5.1: give each its own address"],
    [
      "an aux address on the gateway",
      { gateways: ["10.1.5.1"], auxAddresses: { router: "10.1.5.1" } },
      "aux address router=10.1.5.1 is the gateway of subnet 10.1.0.0/16: give one of them another address",
    ],
    [
      "an aux address on the default gateway",
      { auxAddresses: { router: "10.1.0.1" } },
      "aux address router=10.1.0.1 is the default gateway of subnet 10.1.0.0/16 (its first usable address): choose another address, or set --gateway",
    ],
  ] as [string, Partial<NetworkSpec>, string][])("%s", async (_, overrides, message) => {
    await refused(() => createNetwork(spec("bad", { subnets: ["10.1.0.0/16"], ...overrides })), status.INVALID_ARGUMENT, message);
  });

  it.each([
    [
      "a block size on an l2 network",
      { ipv4_block_prefix: "28" },
      "option ipv4_block_prefix is for l3 and l3s networks, whose hosts take blocks of the subnet; an l2 network has none: remove it, or add -o ipvlan_mode=l3",
    ],
    ["an IPv4 block size out of range", { ipvlan_mode: "l3", ipv4_block_prefix: "40" }, "ipv4_block_prefix must be between 20-32, received: 40"],
    ["an IPv6 block size out of range", { ipvlan_mode: "l3s", ipv6_block_prefix: "100" }, "ipv6_block_prefix must be between 116-128, received: 100"],
  ] as [string, Record<string, string>, string][])("%s", async (_, options, message) => {
    await refused(() => createNetwork(spec("bad", { subnets: ["10.1.0.0/16", "2001:db8:1::/64"], options })), status.INVALID_ARGUMENT, message);
  });
});

describe("run refuses bad input and changes nothing", () => {
  it("--ip outside every subnet", async () => {
    await refused(
      () => attach("x", "db_net", "10.9.9.9"),
      status.INVALID_ARGUMENT,
      "--ip 10.9.9.9 is outside every IPv4 subnet of network db_net (192.168.1.0/24): choose an address in one of them",
    );
  });

  it("--ip6 outside every IPv6 subnet", async () => {
    await refused(
      () => attach("x", "v6net", "", "2001:db8:ffff::1"),
      status.INVALID_ARGUMENT,
      "--ip6 2001:db8:ffff::1 is outside every IPv6 subnet of network v6net (2001:db8:abc9::/64): choose an address in one of them",
    );
  });

  it("--ip already in use, naming the container that has it", async () => {
    await refused(
      () => attach("x", "db_net", "192.168.1.10"),
      status.ALREADY_EXISTS,
      "--ip 192.168.1.10 is already in use by container ipv1 on network db_net; choose another address, or leave --ip out to get a free one",
    );
  });

  it("--ip6 already in use, however it is spelled", async () => {
    await refused(
      () => attach("x", "v6net", "", "2001:0db8:abc9:0::51"),
      status.ALREADY_EXISTS,
      "--ip6 2001:db8:abc9::51 is already in use by container six1 on network v6net; choose another address, or leave --ip6 out to get a free one",
    );
  });

  it("--ip that is the network's gateway", async () => {
    await refused(() => attach("x", "db_net", "192.168.1.1"), status.ALREADY_EXISTS, /^address 192\.168\.1\.1 is the gateway of subnet 192\.168\.1\.0\/24/);
  });

  it("--ip that is an aux address, naming it", async () => {
    await refused(
      () => attach("x", "aux_net", "10.70.0.5"),
      status.ALREADY_EXISTS,
      "--ip 10.70.0.5 is aux address router of network aux_net, which no container gets; choose another address, or leave --ip out to get a free one",
    );
  });

  it("--ip6 on a network without IPv6", async () => {
    await refused(
      () => attach("x", "db_net", "", "2001:db8::5"),
      status.INVALID_ARGUMENT,
      "network db_net has no IPv6 subnet, so --ip6 2001:db8::5 cannot be used; create the network with --ipv6",
    );
  });

  it.each([
    ["--ip", "192.168.1", ""],
    ["--ip", "2001:db8::5", ""],
    ["--ip6", "", "192.168.1.5"],
  ])("%s that is not an address of its family", async (flag, ipv4, ipv6) => {
    await refused(() => attach("x", "v6net", ipv4, ipv6), status.INVALID_ARGUMENT, new RegExp(`^invalid ${flag} "${ipv4 || ipv6}": expected an IPv`));
  });

  it("an unknown --net", async () => {
    await refused(
      () => attach("x", "nonet"),
      status.NOT_FOUND,
      "network nonet not found: create it with trellis network create, or see trellis network ls",
    );
  });

  it("a container name already in use", async () => {
    await refused(
      () => attach("ipv1", "v6net"),
      status.ALREADY_EXISTS,
      'container name "ipv1" is already in use (network db_net, host h1); remove it first (trellis rm ipv1) or choose another name',
    );
  });

  it("an unknown host, naming the known ones", async () => {
    const call = () => callUnary(control.attachEndpoint.bind(control), { intentId: "", spec: { network: "db_net", container: "x", host: "h9", ipv4: "", ipv6: "" } });
    await refused(call, status.NOT_FOUND, "host h9 is not known: known hosts are h1, h2 (start trellis agent --host=h9 there)");
  });
});

describe("removal refuses what would break and changes nothing", () => {
  it("a network that still has containers, naming them", async () => {
    await refused(
      () => deleteNetwork("db_net"),
      status.FAILED_PRECONDITION,
      "network db_net has active endpoints: ipv1, ipv2; remove them first (trellis rm)",
    );
  });

  it("an unknown network or container", async () => {
    await refused(() => deleteNetwork("nonet"), status.NOT_FOUND, "network nonet not found");
    await refused(
      () => callUnary(control.detachEndpoint.bind(control), { intentId: "", container: "nobody" }),
      status.NOT_FOUND,
      "no such container: nobody (see trellis ps)",
    );
  });
});

describe("the trellis CLI refuses bad flags before it calls anything", () => {
  const trellis = (...args: string[]) => runTrellis({ TRELLIS_PLANNER_ADDR: planner.address, TRELLIS_NATS_URL: nats.url }, ...args);
  let before: unknown;
  beforeEach(async () => {
    before = await world();
  });

  it("an unknown flag, listing the valid ones", async () => {
    const { code, stderr } = await trellis("network", "create", "--subnett=10.1.0.0/24", "bad");
    expect(code).toBe(2);
    expect(stderr).toContain("Error: Unknown option '--subnett'");
    expect(stderr).toContain("valid flags: -d/--driver, --subnet, --gateway, --ip-range, --aux-address, --internal, --ipv6, -o/--opt");
    expect(await world()).toEqual(before);
  });

  it("-o without key=value", async () => {
    const { code, stderr } = await trellis("network", "create", "-o", "eth0", "bad");
    expect(code).toBe(2);
    expect(stderr).toContain('Error: invalid option "eth0": expected key=value, e.g. -o parent=eth0');
    expect(await world()).toEqual(before);
  });

  it("--aux-address without NAME=IP, and one name given twice", async () => {
    const unnamed = await trellis("network", "create", "--subnet=10.1.0.0/16", "--aux-address", "10.1.0.5", "bad");
    expect(unnamed).toMatchObject({ code: 2, stderr: expect.stringContaining('Error: invalid aux address "10.1.0.5": expected key=value, e.g. --aux-address router=192.168.1.5') });
    const twice = await trellis("network", "create", "--subnet=10.1.0.0/16", "--aux-address", "r=10.1.0.5", "--aux-address", "r=10.1.0.6", "bad");
    expect(twice).toMatchObject({ code: 2, stderr: expect.stringContaining("Error: aux address r is given twice (r=10.1.0.5 and r=10.1.0.6): give it once") });
    expect(await world()).toEqual(before);
  });

  it("service flags out of range: a planner's intent retention, an agent's heartbeat interval", async () => {
    expect(await trellis("planner", "--intent-retention=10s")).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('Error: invalid --intent-retention "10s": expected a whole number with a unit (s, m, h or d), at least 60 s, e.g. 24h'),
    });
    expect(await trellis("agent", "--heartbeat-interval=0")).toMatchObject({
      code: 2,
      stderr: expect.stringContaining('Error: invalid --heartbeat-interval "0": expected whole seconds from 1 to 300, e.g. 10'),
    });
    expect(await world()).toEqual(before);
  });

  it("a server-side refusal, printed as the server said it, exit status 1", async () => {
    const { code, stderr } = await trellis("network", "create", "-o", "parent=eth0.4095", "bad");
    expect(code).toBe(1);
    expect(stderr.trim()).toBe("Error: vlan id must be between 1-4094, received: 4095");
    expect(await world()).toEqual(before);
  });

  it("run without --net, and an unknown --net", async () => {
    expect(await trellis("run", "--name=x", "--host=h1")).toMatchObject({ code: 2, stderr: expect.stringContaining("Error: trellis run needs --net=NETWORK") });
    expect(await trellis("run", "--net=nonet", "--name=x", "--host=h1")).toMatchObject({
      code: 1,
      stderr: expect.stringContaining("Error: network nonet not found"),
    });
    expect(await world()).toEqual(before);
  });
});
