import type { NatsConnection } from "@nats-io/transport-node";
import { Counter, Gauge, type Registry } from "prom-client";

/** Every service's NATS connection: whether it is up now, and how often it came back. */
export function observeBus(nc: NatsConnection, registry: Registry): void {
  const connected = new Gauge({ name: "trellis_nats_connected", help: "1 while the service's NATS connection is up, 0 while it reconnects", registers: [registry] });
  const reconnects = new Counter({ name: "trellis_nats_reconnects_total", help: "Times the NATS connection was re-established", registers: [registry] });
  connected.set(nc.isClosed() ? 0 : 1);
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === "disconnect") connected.set(0);
      else if (status.type === "reconnect") {
        connected.set(1);
        reconnects.inc();
      }
    }
    connected.set(0);
  })();
  void nc.closed().then(() => connected.set(0));
}
