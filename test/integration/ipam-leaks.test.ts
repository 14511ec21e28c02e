// Leak collection on a real nats-server: allocations whose endpoint or host is gone are released
// after two sightings a grace period apart; the allocation of a live endpoint on a live host stays.
import { afterAll, beforeAll, expect, it } from "vitest";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";
import { startIpamService, type RunningIpamService } from "../../services/ipam/main.js";
import { connectIpam, type IpamCalls } from "../../services/ipam/client.js";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { AddressKind } from "../../libs/proto/gen/trellis/v1/ipam.js";

const GRACE_MS = 600;
let nats: NatsServer;
let nc: NatsConnection;
let service: RunningIpamService;
let ipam: IpamCalls;
let endpoints: KV;
let hosts: KV;

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connect({ servers: nats.url });
  endpoints = await openBucket(nc, Buckets.endpoints);
  hosts = await openBucket(nc, Buckets.hosts);
  service = await startIpamService({
    natsUrl: nats.url,
    listen: "127.0.0.1:0",
    log: () => {},
    collectLeaks: { graceMs: GRACE_MS, hostTimeoutMs: 30_000, intervalMs: 100 },
  });
  ipam = connectIpam(service.address);
});

afterAll(async () => {
  ipam.close();
  await service.stop();
  await nc.close();
  await nats.stop();
});

const putEndpoint = (container: string, id: string, host: string) =>
  endpoints.put(container, Endpoint.encode(Endpoint.fromPartial({ id, container, host, networkId: "n" })).finish());
const heartbeat = (host: string, at: Date) => hosts.put(host, HostRecord.encode(HostRecord.fromPartial({ host, heartbeatAt: at.toISOString() })).finish());

async function endpointsHolding(): Promise<string[]> {
  const { allocations } = await ipam.listAllocations("n");
  return allocations.filter((a) => a.kind === AddressKind.ADDRESS_KIND_ENDPOINT).map((a) => a.endpointId).sort();
}

it("releases allocations of gone endpoints and dead hosts, and empty blocks, never a live endpoint's", async () => {
  await heartbeat("alive", new Date());
  await heartbeat("dead", new Date(Date.now() - 3_600_000));
  await putEndpoint("web", "ep-live", "alive");
  await putEndpoint("db", "ep-on-dead-host", "dead");
  await ipam.allocateSubnets({ networkId: "n", withGateway: false, subnets: [{ cidr: "10.30.0.0/24", gateway: "", ipv6: false }], hostBlocks: {} });
  for (const [endpointId, host] of [["ep-live", "alive"], ["ep-on-dead-host", "dead"], ["ep-gone", "alive"]] as const) {
    await ipam.allocateAddress({ networkId: "n", endpointId, host, ipv6: false, address: "" });
  }
  expect(await endpointsHolding()).toEqual(["ep-gone", "ep-live", "ep-on-dead-host"]);

  // One sweep sees them gone, the next within the grace period must not release yet.
  await new Promise((resolve) => setTimeout(resolve, GRACE_MS / 3));
  expect(await endpointsHolding()).toEqual(["ep-gone", "ep-live", "ep-on-dead-host"]);

  const deadline = Date.now() + 10_000;
  while ((await endpointsHolding()).length > 1 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  expect(await endpointsHolding()).toEqual(["ep-live"]);
  // The dead host's block went back with its last address; the live host keeps its own.
  const blocksDeadline = Date.now() + 5_000;
  while ((await ipam.listBlocks("n")).blocks.length > 1 && Date.now() < blocksDeadline) await new Promise((resolve) => setTimeout(resolve, 100));
  expect((await ipam.listBlocks("n")).blocks.map((block) => block.host)).toEqual(["alive"]);

  // Several grace periods later the live endpoint still holds its address.
  await new Promise((resolve) => setTimeout(resolve, GRACE_MS * 3));
  expect(await endpointsHolding()).toEqual(["ep-live"]);
});
