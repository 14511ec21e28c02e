import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, hostKeysFilter } from "../../libs/bus/subjects.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { startIpamService, type RunningIpamService } from "../../services/ipam/main.js";
import { startPlanner, type RunningPlanner } from "../../services/planner/main.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

// "Persistent configurations that are applied every time the engine starts": every part is stopped,
// nats-server killed outright, and all of it started again on the same store.

let nats: NatsServer;
let services: { ipam: RunningIpamService; planner: RunningPlanner; control: ControlClient } | undefined;

async function startServices() {
  const ipam = await startIpamService({ natsUrl: nats.url, listen: "127.0.0.1:0", log: () => undefined });
  const planner = await startPlanner({ natsUrl: nats.url, listen: "127.0.0.1:0", ipamAddress: ipam.address });
  return { ipam, planner, control: new ControlClient(planner.address, insecure(), clientOptions) };
}

async function stopServices(): Promise<void> {
  services?.control.close();
  await services?.planner.stop();
  await services?.ipam.stop();
  services = undefined;
}

async function withBus<T>(use: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await connectBus({ servers: nats.url, name: "restart-test" });
  try {
    return await use(nc);
  } finally {
    await nc.close();
  }
}

async function snapshot() {
  const control = services!.control;
  const networks = (await callUnary(control.listNetworks.bind(control), {})).networks;
  const endpoints = (await callUnary(control.listEndpoints.bind(control), { network: "", pageToken: "", pageSize: 0 })).endpoints;
  const desired = await withBus((nc) => storedValues(nc, Buckets.desired, hostKeysFilter("h1")));
  const names = await withBus((nc) => storedValues(nc, Buckets.names));
  return { networks, endpoints, desired, names };
}

/** Every live key of a bucket (within a filter) with its value in hex. */
async function storedValues(nc: NatsConnection, bucket: string, filter = ">"): Promise<Record<string, string>> {
  const kv = await openBucket(nc, bucket);
  const values: Record<string, string> = {};
  for await (const key of await kv.keys(filter)) {
    const entry = await kv.get(key);
    if (entry?.operation === "PUT") values[key] = Buffer.from(entry.value).toString("hex");
  }
  return values;
}

beforeAll(async () => {
  nats = await startNatsServer();
  services = await startServices();
  await withBus(async (nc) => {
    const record = HostRecord.fromPartial({ host: "h1", address: "192.168.1.11", role: "host", heartbeatAt: new Date().toISOString() });
    await (await openBucket(nc, Buckets.hosts)).put("h1", codecOf(HostRecord).encode(record));
  });
});

afterAll(async () => {
  await stopServices();
  await nats?.stop();
});

describe("a restart of every service", () => {
  it("keeps networks, containers, addresses and each host's desired state, and hands out no address twice", async () => {
    const control = services!.control;
    await callUnary(control.createNetwork.bind(control), {
      intentId: "",
      spec: NetworkSpec.fromPartial({ name: "ipvlan20", driver: "ipvlan", subnets: ["192.168.20.0/24"], ipv6: true, options: { parent: "eth0.20" } }),
    });
    for (const container of ["c1", "c2"]) {
      await callUnary(control.attachEndpoint.bind(control), { intentId: "", spec: { network: "ipvlan20", container, host: "h1", ipv4: "", ipv6: "" } });
    }
    const before = await snapshot();
    expect(before.endpoints.map((e) => e.addresses[0])).toEqual(["192.168.20.2/24", "192.168.20.3/24"]);
    expect(Object.keys(before.desired)).toHaveLength(2);
    expect(Object.keys(before.names)).toHaveLength(2);

    await stopServices();
    await nats.restart();
    services = await startServices();

    expect(await snapshot()).toEqual(before);
    const next = services.control;
    const c3 = await callUnary(next.attachEndpoint.bind(next), { intentId: "", spec: { network: "ipvlan20", container: "c3", host: "h1", ipv4: "", ipv6: "" } });
    expect(c3.addresses[0]).toBe("192.168.20.4/24");
    await expect(
      callUnary(next.attachEndpoint.bind(next), { intentId: "", spec: { network: "ipvlan20", container: "c4", host: "h1", ipv4: "192.168.20.2", ipv6: "" } }),
    ).rejects.toMatchObject({ details: expect.stringContaining("c1") });
  });
});
