import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Counter } from "prom-client";
import { serveMetrics, serviceRegistry, type MetricsEndpoint } from "../../libs/metrics/endpoint.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";
import { runTrellis } from "../support/trellis-cli.js";

// The metrics endpoint on a real socket, and the services' --metrics flag as an operator gives it, right or wrong.

let nats: NatsServer;
let endpoint: MetricsEndpoint;
let taken: Server;
let takenPort: number;

beforeAll(async () => {
  nats = await startNatsServer();
  const registry = serviceRegistry();
  new Counter({ name: "test_things_total", help: "Things", registers: [registry] }).inc(3);
  endpoint = await serveMetrics([registry], "127.0.0.1:0");
  taken = createServer();
  await new Promise<void>((resolve) => taken.listen(0, "127.0.0.1", () => resolve()));
  takenPort = (taken.address() as AddressInfo).port;
});

afterAll(async () => {
  await endpoint.stop();
  taken.close();
  await nats.stop();
});

describe("the metrics endpoint", () => {
  it("serves the registry in Prometheus's text format at /metrics, with the runtime's own metrics", async () => {
    const response = await fetch(`http://${endpoint.address}/metrics`);
    expect([response.status, response.headers.get("content-type")]).toEqual([200, "text/plain; version=0.0.4; charset=utf-8"]);
    const text = await response.text();
    expect(text).toContain("# TYPE test_things_total counter\ntest_things_total 3\n");
    expect(text).toMatch(/^process_resident_memory_bytes \d+$/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_seconds [\d.e-]+$/m);
  });

  it("answers 404 elsewhere, saying where the metrics are", async () => {
    const response = await fetch(`http://${endpoint.address}/`);
    expect([response.status, await response.text()]).toEqual([404, "not found: metrics are at /metrics\n"]);
  });
});

describe("--metrics", () => {
  it("refuses an address that is not HOST:PORT before anything starts, saying what would be right", async () => {
    const result = await runTrellis({}, "ipam", `--nats=${nats.url}`, "--listen=127.0.0.1:0", "--metrics=9711");
    expect(result.code).toBe(2);
    expect(result.stderr.split("\n")[0]).toBe('Error: invalid --metrics "9711": expected HOST:PORT to serve Prometheus metrics on, e.g. 0.0.0.0:9711, or off');
    expect(result.stdout).toBe("");
  });

  it("stops a service whose metrics port is taken, saying so and what to do", async () => {
    const result = await runTrellis({}, "planner", `--nats=${nats.url}`, "--listen=127.0.0.1:0", "--ipam=127.0.0.1:1", `--metrics=127.0.0.1:${takenPort}`);
    expect(result.code).toBe(1);
    expect(result.stderr.trim()).toBe(
      `Error: failed to serve metrics on 127.0.0.1:${takenPort}: listen EADDRINUSE: address already in use 127.0.0.1:${takenPort}; pick another port with --metrics=HOST:PORT, or --metrics=off`,
    );
  });
});
