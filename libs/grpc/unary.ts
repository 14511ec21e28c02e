import { credentials, Metadata, type CallOptions, type ClientUnaryCall, type ServiceError } from "@grpc/grpc-js";
import { traceContextInterceptor } from "../telemetry/grpc-context.js";

export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/** A unary call as a promise, with a deadline so that a dead peer is an error, not a hang. */
export function callUnary<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, timeoutMs = 30_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(request, new Metadata(), { deadline: Date.now() + timeoutMs }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}

/**
 * Channel options of every Trellis client and server: no channelz statistics and no transparent retries
 * (both on by default). Trellis reads neither, and its callers retry on their own terms.
 */
export const channelOptions = { "grpc.enable_channelz": 0, "grpc.enable_retries": 0 };

/** Options every Trellis gRPC client uses: plaintext on a trusted network, trace context in metadata. */
export const clientOptions = { ...channelOptions, interceptors: [traceContextInterceptor] };
export const insecure = credentials.createInsecure;
