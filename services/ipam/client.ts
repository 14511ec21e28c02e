import {
  IpamClient,
  type AddressCall,
  type AddressCallResult,
  type AllocateAddressRequest,
  type AllocateAddressResponse,
  type AllocateSubnetsRequest,
  type AllocateSubnetsResponse,
  type ListAllocationsResponse,
  type ListBlocksResponse,
} from "../../libs/proto/gen/trellis/v1/ipam.js";
import { traceparentOf } from "../../libs/bus/trace.js";
import { CallStreamClient } from "../../libs/grpc/call-stream.js";
import { callUnary, clientOptions } from "../../libs/grpc/unary.js";
import { clientCredentials } from "../../libs/grpc/credentials.js";
import type { LoadedTls } from "../../libs/tls/settings.js";

/** Promise-returning IPAM calls over gRPC, carrying the active trace context. Errors are ServiceErrors. */
export interface IpamCalls {
  allocateSubnets(request: AllocateSubnetsRequest): Promise<AllocateSubnetsResponse>;
  releaseSubnets(networkId: string): Promise<void>;
  allocateAddress(request: AllocateAddressRequest): Promise<AllocateAddressResponse>;
  releaseAddresses(networkId: string, endpointId: string): Promise<void>;
  listAllocations(networkId: string): Promise<ListAllocationsResponse>;
  /** `host` empty: every host's blocks and borrowed addresses. */
  listBlocks(networkId: string, host?: string): Promise<ListBlocksResponse>;
  close(): void;
}

/** Per-container calls (allocate, release) share one call stream; the rest are unary calls. `tls`: mutual TLS as the planner. */
export function connectIpam(address: string, tls?: LoadedTls): IpamCalls {
  const client = new IpamClient(address, clientCredentials(tls), clientOptions);
  const addressCalls = new CallStreamClient<AddressCall, AddressCallResult>(() => client.addressCalls());
  const send = (call: AddressCall["call"]) => addressCalls.call({ traceparent: traceparentOf(), call });
  return {
    allocateSubnets: (request) => callUnary(client.allocateSubnets.bind(client), request),
    releaseSubnets: async (networkId) => {
      await callUnary(client.releaseSubnets.bind(client), { networkId });
    },
    allocateAddress: async (request) => {
      const outcome = await send({ $case: "allocateAddress", value: request });
      if (outcome.$case !== "allocateAddress") throw new Error(`failed to allocate an address: ipam answered ${outcome.$case}`);
      return outcome.value;
    },
    releaseAddresses: async (networkId, endpointId) => {
      await send({ $case: "releaseAddresses", value: { networkId, endpointId } });
    },
    listAllocations: (networkId) => callUnary(client.listAllocations.bind(client), { networkId }),
    listBlocks: (networkId, host = "") => callUnary(client.listBlocks.bind(client), { networkId, host }),
    close: () => {
      addressCalls.close();
      client.close();
    },
  };
}
