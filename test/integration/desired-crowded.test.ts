import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, desiredKey } from "../../libs/bus/subjects.js";
import { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { DesiredState, type DesiredChange } from "../../services/link-agent/desired.js";
import { eventually } from "../support/eventually.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

// A runtime container given a second Trellis network (`docker network connect`, a second CNI attachment) puts a
// second endpoint in a namespace that one already has. The agent keys its work by namespace: the second is told
// apart as crowded, and the first keeps its namespace, whatever comes and goes after.

const endpointCodec = codecOf(Endpoint);
const RUNTIME_NETNS = "/run/netns/cni-crowded-test";
const endpoint = (id: string, container: string, networkName: string) =>
  Endpoint.fromPartial({ id, container, host: "h1", netns: RUNTIME_NETNS, ifname: "eth0", networkId: `id-${networkName}`, networkName });

let nats: NatsServer;
let nc: NatsConnection;
let desiredBucket: KV;
let desired: DesiredState;
const changes: DesiredChange[] = [];
const noNames = { put: () => undefined, delete: () => undefined, dropNetwork: () => undefined };

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectBus({ servers: nats.url, name: "desired-crowded-test" });
  const [networks, desiredKv, names] = await Promise.all([Buckets.networks, Buckets.desired, Buckets.names].map((b) => openBucket(nc, b)));
  desiredBucket = desiredKv!;
  desired = await DesiredState.start({ networks: networks!, desired: desiredBucket, names: names! }, "h1", (change) => changes.push(change), () => undefined, noNames);
});

afterAll(async () => {
  desired?.stop();
  await nc?.close();
  await nats?.stop();
});

describe("a second endpoint in one namespace", () => {
  it("is told as crowded with its holder, and leaves the holder's namespace, its network and the pass's endpoints as they were", async () => {
    const first = endpoint("ep1", "web", "blue");
    await desiredBucket.put(desiredKey("h1", first.id), endpointCodec.encode(first));
    await eventually("the first endpoint", () => desired.endpointIn(RUNTIME_NETNS)?.id, (id) => id === "ep1");

    const second = endpoint("ep2", "web-green", "green");
    await desiredBucket.put(desiredKey("h1", second.id), endpointCodec.encode(second));
    const told = await eventually("the second told", () => changes.find((change) => change.kind === "crowded"), Boolean);
    expect(told).toMatchObject({ kind: "crowded", endpoint: { id: "ep2" }, holder: { id: "ep1", container: "web" } });
    expect(desired.endpointIn(RUNTIME_NETNS)?.id).toBe("ep1");
    expect(desired.endpoints().map((e) => e.id)).toEqual(["ep1"]);
    expect(desired.endpointsOf("id-green")).toEqual([]);
    expect(desired.crowdedEndpoints().map((e) => e.id)).toEqual(["ep2"]);

    // Its caller detaches it: it is told gone, with no holder, and the first still has the namespace.
    changes.length = 0;
    await desiredBucket.delete(desiredKey("h1", second.id));
    const gone = await eventually("the second gone", () => changes.find((change) => change.kind === "crowded"), Boolean);
    expect(gone).toEqual({ kind: "crowded", endpoint: expect.objectContaining({ id: "ep2" }) });
    expect(changes.filter((change) => change.kind === "endpoint")).toEqual([]);
    expect(desired.endpointIn(RUNTIME_NETNS)?.id).toBe("ep1");
    expect(desired.crowdedEndpoints()).toEqual([]);
  });

  it("an update of the holder is still the holder's; once the holder is gone, a new endpoint takes the namespace", async () => {
    const first = endpoint("ep1", "web", "blue");
    await desiredBucket.put(desiredKey("h1", first.id), endpointCodec.encode({ ...first, addresses: ["10.9.0.2/24"] }));
    await eventually("the holder's update", () => desired.endpointIn(RUNTIME_NETNS)?.addresses, (addresses) => addresses?.join() === "10.9.0.2/24");
    await desiredBucket.delete(desiredKey("h1", first.id));
    await eventually("the namespace free", () => desired.endpointIn(RUNTIME_NETNS), (held) => held === undefined);
    changes.length = 0;
    const next = endpoint("ep3", "web-next", "green");
    await desiredBucket.put(desiredKey("h1", next.id), endpointCodec.encode(next));
    await eventually("the new holder", () => desired.endpointIn(RUNTIME_NETNS)?.id, (id) => id === "ep3");
    expect(changes.some((change) => change.kind === "crowded")).toBe(false);
  });
});
