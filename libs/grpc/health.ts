import type { ServerWritableStream, ServiceDefinition } from "@grpc/grpc-js";
import { HealthCheckResponse_ServingStatus as ServingStatus, type HealthCheckRequest, type HealthCheckResponse, type HealthServer } from "../proto/gen/grpc/health/v1/health.js";
import { notFound, toServiceError } from "./status-error.js";

/**
 * The standard gRPC health service of one server: SERVING from the start until the server stops, for
 * the server as a whole ("") and for each service it has. Unlike a TCP probe, which the kernel answers,
 * a health check needs the service's event loop.
 */
export class ServerHealth {
  private serving = ServingStatus.SERVING;
  private readonly watchers = new Set<ServerWritableStream<HealthCheckRequest, HealthCheckResponse>>();
  private readonly names: Set<string>;

  constructor(services: ServiceDefinition[]) {
    this.names = new Set(["", ...services.map(serviceName)]);
  }

  /** Before the server stops: watchers hear NOT_SERVING and their streams end, so that shutdown need not wait on them. */
  stopServing(): void {
    this.serving = ServingStatus.NOT_SERVING;
    for (const watcher of this.watchers) {
      watcher.write({ status: this.serving });
      watcher.end();
    }
    this.watchers.clear();
  }

  implementation(): HealthServer {
    return {
      check: (call, callback) => {
        if (this.names.has(call.request.service)) callback(null, { status: this.serving });
        else callback(toServiceError(notFound(`no service ${call.request.service} here; there are ${[...this.names].filter(Boolean).join(", ")}`)), null);
      },
      watch: (call) => {
        if (!this.names.has(call.request.service)) {
          call.write({ status: ServingStatus.SERVICE_UNKNOWN });
          return;
        }
        this.watchers.add(call);
        call.on("cancelled", () => this.watchers.delete(call));
        call.write({ status: this.serving });
      },
    };
  }
}

/** "trellis.v1.Ipam" from the service's method paths ("/trellis.v1.Ipam/AllocateAddress"). */
export function serviceName(service: ServiceDefinition): string {
  const path = Object.values(service)[0]?.path ?? "";
  return path.slice(1, path.lastIndexOf("/"));
}
