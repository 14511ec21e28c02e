import { isIP } from "node:net";
import { Server, status, type ServerCredentials, type sendUnaryData, type ServerUnaryCall, type ServiceDefinition, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { context, SpanKind, trace } from "@opentelemetry/api";
import { contextFromMetadata, endRpcSpan, rpcAttributes } from "../telemetry/grpc-context.js";
import { tracer } from "../telemetry/tracing.js";
import type { LoadedTls } from "../tls/settings.js";
import { authorisation, type AccessPolicy } from "./authorise.js";
import { serverCredentials } from "./credentials.js";
import { toServiceError } from "./status-error.js";
import { channelOptions } from "./unary.js";
import { ServerHealth, serviceName } from "./health.js";
import { HealthService } from "../proto/gen/grpc/health/v1/health.js";

/**
 * A unary handler from an async function, in a SERVER span (rpc.* conventions) that joins the caller's trace; a thrown
 * StatusError reaches the client with its code and message.
 */
/** `handle` gets the call too, for what the request does not say: who is calling (authorise.ts callerIdentity). */
export function unaryHandler<Req, Res>(handle: (request: Req, call: ServerUnaryCall<Req, Res>) => Promise<Res>) {
  return (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>): void => {
    const path = call.getPath();
    const span = tracer.startSpan(path.slice(1), { kind: SpanKind.SERVER, attributes: rpcAttributes(path) }, contextFromMetadata(call.metadata));
    context
      .with(trace.setSpan(contextFromMetadata(call.metadata), span), () => handle(call.request, call))
      .then((response) => {
        endRpcSpan(span, status.OK, "");
        callback(null, response);
      })
      .catch((error: unknown) => {
        const failure = toServiceError(error);
        endRpcSpan(span, failure.code ?? status.UNKNOWN, String(failure.details ?? failure.message));
        callback(failure, null);
      });
  };
}

export interface ServingServer {
  /** host:port actually bound (port 0 picks a free one). */
  address: string;
  stop(): Promise<void>;
}

export interface ServeOptions {
  /** Mutual TLS; without it the server speaks plaintext and authorises no one (the lab, loopback). */
  tls?: LoadedTls | undefined;
  /** Who may call what, by the client certificate's identity; applied only with TLS. */
  access?: AccessPolicy | undefined;
  /**
   * HOST:PORT of a second, plaintext listener with the health service alone: kubelet's gRPC probes speak no TLS.
   * It tells nothing but SERVING or NOT_SERVING.
   */
  healthListen?: string | undefined;
}

export async function serveGrpc(
  service: ServiceDefinition,
  implementation: UntypedServiceImplementation,
  listen: string,
  options: ServeOptions = {},
): Promise<ServingServer> {
  const { tls, access } = options;
  if (tls && !access) throw new Error(`failed to serve ${serviceName(service)} over TLS: no access policy says who may call it`);
  const warning = plaintextWarning(serviceName(service), listen, tls !== undefined);
  if (warning) console.error(warning);
  const server = new Server({ ...channelOptions, ...(tls && access && { interceptors: [authorisation([access])] }) });
  server.addService(service, implementation);
  const health = new ServerHealth([service]);
  server.addService(HealthService, health.implementation());
  const healthServer = options.healthListen === undefined ? undefined : new Server(channelOptions);
  healthServer?.addService(HealthService, health.implementation());
  const port = await bind(server, listen, serverCredentials(tls));
  if (healthServer) await bind(healthServer, options.healthListen!, serverCredentials(undefined));
  const host = listen.slice(0, listen.lastIndexOf(":"));
  return {
    address: `${host}:${port}`,
    stop: async () => {
      health.stopServing();
      await Promise.all([server, healthServer].filter((s) => s !== undefined).map(shutdown));
    },
  };
}

function bind(server: Server, listen: string, credentials: ServerCredentials): Promise<number> {
  return new Promise<number>((resolve, reject) =>
    server.bindAsync(listen, credentials, (error, bound) => (error ? reject(new Error(`failed to listen on ${listen}: ${error.message}`)) : resolve(bound))),
  );
}

function shutdown(server: Server): Promise<void> {
  return new Promise<void>((resolve) => {
    server.tryShutdown(() => resolve());
    // Calls still running after the grace period are cut; tryShutdown's callback then never comes.
    setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, 2000).unref();
  });
}

/** What a server says at start when it listens in plaintext where others may reach it; undefined when it need not. */
export function plaintextWarning(service: string, listen: string, tls: boolean): string | undefined {
  if (tls || isLoopback(listen)) return undefined;
  return (
    `Warning: ${service} listens on ${listen} without TLS: anyone who reaches it may call it, in the clear; ` +
    "give it --tls-ca, --tls-cert and --tls-key (or TRELLIS_TLS_CA, TRELLIS_TLS_CERT and TRELLIS_TLS_KEY)"
  );
}

/** Plaintext is for the lab and for this machine alone: loopback addresses and "localhost". */
function isLoopback(listen: string): boolean {
  const host = listen.slice(0, listen.lastIndexOf(":")).replace(/^\[(.*)\]$/, "$1");
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}
