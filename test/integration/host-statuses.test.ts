import type { KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, statusKey } from "../../libs/bus/subjects.js";
import { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import { HostStatuses } from "../../services/link-agent/local-api/host-statuses.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

// The local API's one watch of its host's statuses, on a real NATS, as an agent's restart leaves it: statuses already
// stored when it starts, and whatever a peer may have written there.

const HOST = "h1";
let nats: NatsServer;
let nc: NatsConnection;
let bucket: KV;
const followers: HostStatuses[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectBus({ servers: nats.url, name: "host-statuses-test" });
  bucket = await openBucket(nc, Buckets.status);
});

afterAll(async () => {
  await Promise.all(followers.map((follower) => follower.stop()));
  await nc?.close();
  await nats?.stop();
});

function follow(): HostStatuses {
  const follower = new HostStatuses(async () => bucket, HOST);
  followers.push(follower);
  return follower;
}

async function report(endpointId: string, container: string, state: EndpointState): Promise<string> {
  const key = statusKey(HOST, endpointId);
  await bucket.put(key, codecOf(EndpointStatus).encode(EndpointStatus.fromPartial({ endpointId, host: HOST, container, state })));
  return key;
}

describe("the local API's statuses of its host", () => {
  it("makes a DEL that comes just after a restart wait for a status stored before it, until the status goes", async () => {
    const key = await report("ep-restart", "c-restart", EndpointState.ENDPOINT_STATE_READY);
    // A fresh follower, as a restarted agent's: the stored status reaches it only through its watch.
    const statuses = follow();
    let answer: boolean | undefined;
    const gone = statuses.statusGone("c-restart", 30_000).then((value) => (answer = value));
    await statuses.start();
    await new Promise((resolve) => setImmediate(resolve));
    expect(answer).toBeUndefined();
    await bucket.delete(key);
    await gone;
    expect(answer).toBe(true);
  });

  it("passes over a value it cannot read and still answers an ADD with the container's report", async () => {
    await bucket.put(statusKey(HOST, "ep-garbage"), new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff]));
    const statuses = follow();
    await statuses.start();
    const endpoint = Endpoint.fromPartial({ id: "ep-after", host: HOST, container: "c-after" });
    const settled = statuses.settledStatus(endpoint, 30_000);
    await report("ep-after", "c-after", EndpointState.ENDPOINT_STATE_READY);
    expect(await settled).toMatchObject({ endpointId: "ep-after", container: "c-after", state: EndpointState.ENDPOINT_STATE_READY });
  });
});
