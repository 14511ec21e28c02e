import { afterAll, afterEach, beforeAll, beforeEach } from "vitest";
import { jetstreamManager } from "@nats-io/jetstream";
import { connect, type NatsConnection } from "@nats-io/transport-node";
import { Buckets } from "../../libs/bus/subjects.js";
import { connectIpam, type IpamCalls } from "../../services/ipam/client.js";
import { startIpamService, type RunningIpamService } from "../../services/ipam/main.js";
import { startNatsServer, type NatsServer } from "./nats-server.js";

export interface IpamReplicas {
  /** A new IPAM service on the test's nats-server, and a gRPC client to it; both stopped after each test. */
  start(log?: (line: string) => void, releaseCooldownMs?: number): Promise<IpamCalls & { address: string }>;
  nats(): NatsServer;
  connection(): NatsConnection;
}

/**
 * Registers the hooks of an IPAM test file: one real nats-server for the file, an empty IPAM bucket for
 * each test, and every replica started by a test stopped after it.
 */
export function useIpamReplicas(): IpamReplicas {
  let nats: NatsServer;
  let nc: NatsConnection;
  let services: RunningIpamService[] = [];
  let clients: IpamCalls[] = [];

  beforeAll(async () => {
    nats = await startNatsServer();
    nc = await connect({ servers: nats.url });
  });

  afterAll(async () => {
    await nc.close();
    await nats.stop();
  });

  beforeEach(async () => {
    const jsm = await jetstreamManager(nc);
    await jsm.streams.delete(`KV_${Buckets.ipam}`).catch(() => undefined);
  });

  afterEach(async () => {
    for (const client of clients) client.close();
    await Promise.all(services.map((service) => service.stop()));
    services = [];
    clients = [];
  });

  return {
    async start(log = () => {}, releaseCooldownMs = 0) {
      const service = await startIpamService({ natsUrl: nats.url, listen: "127.0.0.1:0", log, releaseCooldownMs });
      services.push(service);
      const client = connectIpam(service.address);
      clients.push(client);
      return { ...client, address: service.address };
    },
    nats: () => nats,
    connection: () => nc,
  };
}
