import { context, type Attributes } from "@opentelemetry/api";
import type {
  AddressCall,
  AddressCallResult,
  AllocateAddressRequest,
  IpamServer,
  ReleaseAddressesRequest,
} from "../../libs/proto/gen/trellis/v1/ipam.js";
import { contextFromTraceparent } from "../../libs/bus/trace.js";
import { serveCallStream } from "../../libs/grpc/call-stream.js";
import { unaryHandler } from "../../libs/grpc/serve.js";
import { invalidArgument } from "../../libs/grpc/status-error.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import type { AddressManager } from "./manager.js";
import type { IpamMetrics } from "../../libs/metrics/ipam.js";

/** The gRPC face of the manager: each call in its caller's trace, each refusal as its status code. */
export function ipamHandlers(manager: AddressManager, metrics: IpamMetrics): IpamServer {
  const allocateAddress = traced("allocateAddress", allocateAttributes, (request: AllocateAddressRequest) => metrics.allocation(() => manager.allocateAddress(request)));
  const releaseAddresses = traced("releaseAddresses", releaseAttributes, async (request: ReleaseAddressesRequest) => {
    await metrics.release(() => manager.releaseAddresses(request.networkId, request.endpointId));
    return {};
  });
  return {
    allocateSubnets: unaryHandler(traced("allocateSubnets", (request) => ({ "network.id": request.networkId }), async (request) => ({
      subnets: await manager.allocateSubnets(request),
    }))),
    releaseSubnets: unaryHandler(traced("releaseSubnets", (request) => ({ "network.id": request.networkId }), async (request) => {
      await manager.releaseSubnets(request.networkId);
      return {};
    })),
    allocateAddress: unaryHandler(allocateAddress),
    releaseAddresses: unaryHandler(releaseAddresses),
    listAllocations: unaryHandler(traced("listAllocations", (request) => ({ "network.id": request.networkId }), async (request) => ({
      allocations: await manager.listAllocations(request.networkId),
    }))),
    listBlocks: unaryHandler(traced("listBlocks", (request) => ({ "network.id": request.networkId, host: request.host }), (request) =>
      manager.listBlocks(request.networkId, request.host),
    )),
    addressCalls: serveCallStream<AddressCall, AddressCallResult>((call) =>
      context.with(contextFromTraceparent(call.traceparent), async () => {
        switch (call.call?.$case) {
          case "allocateAddress":
            return { $case: "allocateAddress", value: await allocateAddress(call.call.value) };
          case "releaseAddresses":
            return { $case: "releaseAddresses", value: await releaseAddresses(call.call.value) };
          default:
            throw invalidArgument("address call carries no call: expected allocate_address or release_addresses");
        }
      }),
    ),
  };
}

/** A handler in a span that joins the caller's trace (restored from metadata or the stream call). */
function traced<Req, Res>(rpc: string, attributesOf: (request: Req) => Attributes, handle: (request: Req) => Promise<Res>) {
  return (request: Req): Promise<Res> => withSpan(`ipam.${rpc}`, attributesOf(request), () => handle(request));
}

function allocateAttributes(request: AllocateAddressRequest): Attributes {
  return { "network.id": request.networkId, "endpoint.id": request.endpointId, host: request.host, ipv6: request.ipv6 };
}

function releaseAttributes(request: ReleaseAddressesRequest): Attributes {
  return { "network.id": request.networkId, "endpoint.id": request.endpointId };
}
