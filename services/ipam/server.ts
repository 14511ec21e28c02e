import type { Attributes } from "@opentelemetry/api";
import type { IpamServer } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { unaryHandler } from "../../libs/grpc/serve.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
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

/** A traced handler: the span joins the caller's trace, which unaryHandler restores from the metadata. */
function unary<Req, Res>(rpc: string, attributesOf: (request: Req) => Attributes, handle: (request: Req) => Promise<Res>) {
  return unaryHandler<Req, Res>((request) => withSpan(`ipam.${rpc}`, attributesOf(request), () => handle(request)));
}
