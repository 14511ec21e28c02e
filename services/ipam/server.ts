import { status, type sendUnaryData, type ServerUnaryCall, type ServiceError } from "@grpc/grpc-js";
import { context, type Attributes } from "@opentelemetry/api";
import type { IpamServer } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { contextFromMetadata } from "../../libs/telemetry/grpc-context.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import { IpamError } from "./errors.js";
import type { AddressManager } from "./manager.js";

/** The gRPC face of the manager: each call in its caller's trace, each refusal as its status code. */
export function ipamHandlers(manager: AddressManager): IpamServer {
  return {
    allocateSubnets: unary("allocateSubnets", (request) => ({ "network.id": request.networkId }), async (request) => ({
      subnets: await manager.allocateSubnets(request),
    })),
    releaseSubnets: unary("releaseSubnets", (request) => ({ "network.id": request.networkId }), async (request) => {
      await manager.releaseSubnets(request.networkId);
      return {};
    }),
    allocateAddress: unary(
      "allocateAddress",
      (request) => ({ "network.id": request.networkId, "endpoint.id": request.endpointId, host: request.host, ipv6: request.ipv6 }),
      (request) => manager.allocateAddress(request),
    ),
    releaseAddresses: unary(
      "releaseAddresses",
      (request) => ({ "network.id": request.networkId, "endpoint.id": request.endpointId }),
      async (request) => {
        await manager.releaseAddresses(request.networkId, request.endpointId);
        return {};
      },
    ),
    listAllocations: unary("listAllocations", (request) => ({ "network.id": request.networkId }), async (request) => ({
      allocations: await manager.listAllocations(request.networkId),
    })),
    listBlocks: unary("listBlocks", (request) => ({ "network.id": request.networkId, host: request.host }), (request) =>
      manager.listBlocks(request.networkId, request.host),
    ),
  };
}

function unary<Req, Res>(
  rpc: string,
  attributesOf: (request: Req) => Attributes,
  handle: (request: Req) => Promise<Res>,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    const run = () => withSpan(`ipam.${rpc}`, attributesOf(call.request), () => handle(call.request));
    context.with(contextFromMetadata(call.metadata), run).then(
      (response) => callback(null, response),
      (error: unknown) => callback(toServiceError(error)),
    );
  };
}

function toServiceError(error: unknown): Partial<ServiceError> {
  if (error instanceof IpamError) return { code: error.code, details: error.message };
  return { code: status.INTERNAL, details: (error as Error).message };
}
