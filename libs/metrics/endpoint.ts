import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { collectDefaultMetrics, Registry } from "prom-client";

/**
 * Where each service serves its metrics unless told otherwise (`--metrics=HOST:PORT`, `--metrics=off`): on every
 * interface, as exporters do, so that a Prometheus on another machine can scrape them. The ports sit beside the
 * services' gRPC ports (planner 7710, ipam 7711).
 */
export const DEFAULT_METRICS_ADDRESS = {
  planner: "0.0.0.0:9710",
  ipam: "0.0.0.0:9711",
  agent: "0.0.0.0:9712",
} as const;

export type MetricsService = keyof typeof DEFAULT_METRICS_ADDRESS;

/** A registry with the runtime's own metrics (CPU, memory, event loop lag, GC), as every service exposes them. */
export function serviceRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

/**
 * `--metrics`: HOST:PORT to serve on, `off` for none (undefined), or absent for the service's default.
 * Checked before anything starts.
 */
export function metricsAddress(service: MetricsService, flag: string | undefined): string | undefined {
  if (flag === undefined) return DEFAULT_METRICS_ADDRESS[service];
  if (flag === "off") return undefined;
  if (!/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(flag) || Number(flag.slice(flag.lastIndexOf(":") + 1)) > 65535) {
    throw new Error(`invalid --metrics "${flag}": expected HOST:PORT to serve Prometheus metrics on, e.g. 0.0.0.0:${DEFAULT_METRICS_ADDRESS[service].split(":")[1]}, or off`);
  }
  return flag;
}

export interface MetricsEndpoint {
  /** HOST:PORT actually bound. */
  address: string;
  stop(): Promise<void>;
}

/** Serves `GET /metrics` in Prometheus's text format; every other path is 404. */
export async function serveMetrics(registries: Registry[], listen: string): Promise<MetricsEndpoint> {
  const registry = registries.length === 1 ? registries[0]! : Registry.merge(registries);
  const server = createServer((request, response) => {
    if (request.method !== "GET" || request.url?.split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found: metrics are at /metrics\n");
      return;
    }
    registry.metrics().then(
      (text) => response.writeHead(200, { "content-type": registry.contentType }).end(text),
      (error: Error) => response.writeHead(500, { "content-type": "text/plain" }).end(`failed to collect metrics: ${error.message}\n`),
    );
  });
  const separator = listen.lastIndexOf(":");
  const host = listen.slice(0, separator).replace(/^\[|\]$/g, "");
  await listenOn(server, host, Number(listen.slice(separator + 1)), listen);
  const bound = server.address() as AddressInfo;
  return {
    address: `${bound.family === "IPv6" ? `[${bound.address}]` : bound.address}:${bound.port}`,
    stop: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

function listenOn(server: Server, host: string, port: number, listen: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", (error: NodeJS.ErrnoException) =>
      reject(new Error(`failed to serve metrics on ${listen}: ${error.message}; pick another port with --metrics=HOST:PORT, or --metrics=off`)),
    );
    server.listen(port, host, () => resolve());
  });
}
