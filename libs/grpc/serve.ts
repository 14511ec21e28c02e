import { Server, ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { context } from "@opentelemetry/api";
import { contextFromMetadata } from "../telemetry/grpc-context.js";
import { toServiceError } from "./status-error.js";
import { channelOptions } from "./unary.js";
import { ServerHealth } from "./health.js";
import { HealthService } from "../proto/gen/grpc/health/v1/health.js";

/**
 * A unary handler from an async function: the caller's trace context is restored around it, and a thrown
 * StatusError reaches the client with its code and message.
 */
export function unaryHandler<Req, Res>(handle: (request: Req) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    context
      .with(contextFromMetadata(call.metadata), () => handle(call.request))
      .then((response) => callback(null, response))
      .catch((error: unknown) => callback(toServiceError(error), null));
  };
}

export interface ServingServer {
  /** host:port actually bound (port 0 picks a free one). */
  address: string;
  stop(): Promise<void>;
}

export async function serveGrpc(
  service: ServiceDefinition,
  implementation: UntypedServiceImplementation,
  listen: string,
): Promise<ServingServer> {
  const server = new Server(channelOptions);
  server.addService(service, implementation);
  const health = new ServerHealth([service]);
  server.addService(HealthService, health.implementation());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(listen, ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(new Error(`failed to listen on ${listen}: ${error.message}`)) : resolve(bound),
    ),
  );
  const host = listen.slice(0, listen.lastIndexOf(":"));
  return {
    address: `${host}:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        health.stopServing();
        server.tryShutdown(() => resolve());
        // Calls still running after the grace period are cut; tryShutdown's callback then never comes.
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 2000).unref();
      }),
  };
}
