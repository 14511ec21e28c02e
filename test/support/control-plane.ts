import type { NatsConnection } from "@nats-io/transport-node";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { clientOptions, insecure } from "../../libs/grpc/unary.js";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { startIpamService, type RunningIpamService } from "../../services/ipam/main.js";
import { startPlanner, type PlannerOptions, type RunningPlanner } from "../../services/planner/main.js";
import { startNatsServer, type NatsServer } from "./nats-server.js";

/** A real nats-server, IPAM and a planner in this process, a Control API client, and a NATS connection to look with. */
export interface ControlPlane {
  nats: NatsServer;
  nc: NatsConnection;
  ipam: RunningIpamService;
  planner: RunningPlanner;
  control: ControlClient;
  /** Writes a host's heartbeat record, as its agent would (`interfaces` empty: the host tells nothing of them). */
  registerHost(host: string, address: string, overrides?: Partial<HostRecord>): Promise<void>;
  stop(): Promise<void>;
}

export async function startControlPlane(planner: Partial<PlannerOptions> = {}): Promise<ControlPlane> {
  const nats = await startNatsServer();
  const nc = await connectBus({ servers: nats.url, name: "test" });
  const ipam = await startIpamService({ natsUrl: nats.url, listen: "127.0.0.1:0", log: () => undefined });
  const running = await startPlanner({ natsUrl: nats.url, listen: "127.0.0.1:0", ipamAddress: ipam.address, ...planner });
  const control = new ControlClient(running.address, insecure(), clientOptions);
  const hosts = await openBucket(nc, Buckets.hosts);
  return {
    nats,
    nc,
    ipam,
    planner: running,
    control,
    async registerHost(host, address, overrides = {}) {
      const record = HostRecord.fromPartial({ host, address, role: "host", heartbeatAt: new Date().toISOString(), ...overrides });
      await hosts.put(host, codecOf(HostRecord).encode(record));
    },
    async stop() {
      control.close();
      await running.stop();
      await ipam.stop();
      await nc.close();
      await nats.stop();
    },
  };
}
