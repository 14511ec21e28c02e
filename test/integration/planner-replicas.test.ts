import { status } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, desiredKey, nameKey } from "../../libs/bus/subjects.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import { startPlanner, type RunningPlanner } from "../../services/planner/main.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";

// Two planner replicas on one NATS, both answering: intents on one name race through both, and the stores'
// conditional writes leave exactly one winner, with no address given twice or left to nothing.

let plane: ControlPlane;
let second: RunningPlanner;
let replicas: ControlClient[];
let nc: NatsConnection;
let ipam: IpamClient;

const HOSTS = Array.from({ length: 20 }, (_, i) => `h${i + 1}`);

function attach(replica: number, container: string, network: string, host: string, ipv4 = "", intentId = "") {
  const control = replicas[replica % replicas.length]!;
  return callUnary(control.attachEndpoint.bind(control), { intentId, spec: { network, container, host, ipv4, ipv6: "" } });
}

function detach(replica: number, container: string) {
  const control = replicas[replica % replicas.length]!;
  return callUnary(control.detachEndpoint.bind(control), { intentId: "", container });
}

async function createNetwork(name: string, subnet: string): Promise<string> {
  const control = replicas[0]!;
  return (await callUnary(control.createNetwork.bind(control), { intentId: "", spec: NetworkSpec.fromPartial({ name, subnets: [subnet] }) })).id;
}

async function settled<T>(calls: Promise<T>[]): Promise<{ won: T[]; lost: { code: number; details: string }[] }> {
  const outcomes = await Promise.allSettled(calls);
  return {
    won: outcomes.flatMap((o) => (o.status === "fulfilled" ? [o.value] : [])),
    lost: outcomes.flatMap((o) => (o.status === "rejected" ? [o.reason as { code: number; details: string }] : [])),
  };
}

/** Every live key of a bucket with its bytes. */
async function stored(bucket: string): Promise<Map<string, Uint8Array>> {
  const kv = await openBucket(nc, bucket);
  const values = new Map<string, Uint8Array>();
  for await (const key of await kv.keys()) {
    const entry = await kv.get(key);
    if (entry?.operation === "PUT") values.set(key, entry.value);
  }
  return values;
}

/** The endpoint addresses IPAM holds in a network (gateways and aux addresses left out). */
async function endpointAllocations(networkId: string): Promise<string[]> {
  const { allocations } = await callUnary(ipam.listAllocations.bind(ipam), { networkId });
  return allocations.filter((a) => a.endpointId !== "").map((a) => `${a.endpointId} ${a.address}`).sort();
}

beforeAll(async () => {
  plane = await startControlPlane();
  nc = plane.nc;
  second = await startPlanner({ natsUrl: plane.nats.url, listen: "127.0.0.1:0", ipamAddress: plane.ipam.address });
  replicas = [plane.control, new ControlClient(second.address, insecure(), clientOptions)];
  ipam = new IpamClient(plane.ipam.address, insecure(), clientOptions);
  for (const [i, host] of HOSTS.entries()) await plane.registerHost(host, `192.168.1.${i + 11}`);
});

afterAll(async () => {
  ipam?.close();
  replicas?.[1]?.close();
  await second?.stop();
  await plane?.stop();
});

describe("two planner replicas answering at once", () => {
  it("let exactly one of several intents for one container name win, through either replica", async () => {
    const networkId = await createNetwork("race_net", "10.90.0.0/16");
    for (let round = 0; round < 10; round++) {
      const container = `contested${round}`;
      const { won, lost } = await settled(Array.from({ length: 8 }, (_, i) => attach(i, container, "race_net", HOSTS[i]!)));
      expect(won).toHaveLength(1);
      expect(lost).toHaveLength(7);
      for (const refusal of lost) {
        expect({ code: status[refusal.code], details: refusal.details }).toEqual({
          code: "ALREADY_EXISTS",
          details: expect.stringContaining(`container name "${container}" is already in use`),
        });
      }
      // The losers' addresses went back: IPAM holds exactly the winner's.
      expect(await endpointAllocations(networkId)).toEqual([`${won[0]!.id} ${won[0]!.addresses[0]}`]);
      await detach(round, container);
    }
  });

  it("let exactly one of several containers take one static address", async () => {
    const networkId = await createNetwork("static_net", "10.91.0.0/16");
    const { won, lost } = await settled(Array.from({ length: 8 }, (_, i) => attach(i, `wants${i}`, "static_net", HOSTS[i]!, "10.91.0.50")));
    expect(won.map((e) => e.addresses)).toEqual([["10.91.0.50/16"]]);
    expect(lost.map((refusal) => status[refusal.code])).toEqual(Array(7).fill("ALREADY_EXISTS"));
    for (const refusal of lost) expect(refusal.details).toMatch(/10\.91\.0\.50 is already in use/);
    expect(await endpointAllocations(networkId)).toEqual([`${won[0]!.id} 10.91.0.50/16`]);
    const listed = (await callUnary(replicas[1]!.listEndpoints.bind(replicas[1]!), { network: "static_net", pageToken: "", pageSize: 0 })).endpoints;
    expect(listed.map((e) => e.container)).toEqual([won[0]!.container]);
  });

  it("answer a retried intent through the other replica with the first one's container and addresses", async () => {
    const first = await attach(0, "retried", "race_net", "h1", "", "intent-retried");
    const again = await attach(1, "retried", "race_net", "h1", "", "intent-retried");
    expect(again).toEqual(first);
  });

  it("leave every host's desired state and every name exact after concurrent attaches and detaches on many networks", async () => {
    const networks = Array.from({ length: 10 }, (_, i) => `many${i}`);
    for (const [i, name] of networks.entries()) await createNetwork(name, `10.${100 + i}.0.0/16`);
    const attached: Endpoint[] = [];
    let next = 0;
    const client = async (worker: number) => {
      while (next < 400) {
        const n = next++;
        attached.push(await attach(worker, `m${n}`, networks[n % networks.length]!, HOSTS[n % HOSTS.length]!));
      }
    };
    await Promise.all(Array.from({ length: 16 }, (_, worker) => client(worker)));
    const removed = attached.filter((_, i) => i % 3 === 0);
    await Promise.all(removed.map((endpoint, i) => detach(i, endpoint.container)));
    const kept = attached.filter((_, i) => i % 3 !== 0);

    // The desired bucket holds exactly one key per live container, under its host, and the names bucket one name.
    const live = (await callUnary(replicas[1]!.listEndpoints.bind(replicas[1]!), { network: "", pageToken: "", pageSize: 0 })).endpoints;
    expect(live.map((e) => e.container)).toEqual(expect.arrayContaining(kept.map((e) => e.container)));
    expect(live.some((e) => removed.some((r) => r.container === e.container))).toBe(false);
    const [desired, names] = await Promise.all([stored(Buckets.desired), stored(Buckets.names)]);
    expect([...desired.keys()].sort()).toEqual(live.map((e) => desiredKey(e.host, e.id)).sort());
    expect([...names.keys()].sort()).toEqual(live.map((e) => nameKey(e.networkId, e.container)).sort());
    for (const endpoint of live) {
      expect(codecOf(Endpoint).decode(desired.get(desiredKey(endpoint.host, endpoint.id))!)).toEqual(endpoint);
      expect(codecOf(NameEntry).decode(names.get(nameKey(endpoint.networkId, endpoint.container))!)).toEqual({
        networkId: endpoint.networkId,
        name: endpoint.container,
        addresses: endpoint.addresses.map((cidr) => cidr.split("/")[0]),
      });
    }
    // No address held twice, none held for a removed container.
    const held = (await Promise.all(kept.concat(removed).map((e) => e.networkId).filter((id, i, all) => all.indexOf(id) === i).map(endpointAllocations))).flat();
    expect(held.sort()).toEqual(kept.map((e) => `${e.id} ${e.addresses[0]}`).sort());
  });
});
