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
import { unavailable } from "../../libs/grpc/status-error.js";
import { connectionFailure, unreachableMessage } from "../../libs/grpc/unreachable.js";
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

/**
 * Per-container calls (allocate, release) share one call stream; the rest are unary calls. `tls`: mutual TLS as
 * the planner. An IPAM that cannot be reached fails a call with UNAVAILABLE saying where it was looked for and
 * what to do: the planner passes that on to its caller, who may retry.
 */
export function connectIpam(address: string, tls?: LoadedTls): IpamCalls {
  const calls = ipamCalls(address, tls);
  const explained = <T>(promise: Promise<T>) => promise.catch((error: unknown) => Promise.reject(explainUnreachable(error, address)));
  return {
    allocateSubnets: (request) => explained(calls.allocateSubnets(request)),
    releaseSubnets: (networkId) => explained(calls.releaseSubnets(networkId)),
    allocateAddress: (request) => explained(calls.allocateAddress(request)),
    releaseAddresses: (networkId, endpointId) => explained(calls.releaseAddresses(networkId, endpointId)),
    listAllocations: (networkId) => explained(calls.listAllocations(networkId)),
    listBlocks: (networkId, host) => explained(calls.listBlocks(networkId, host)),
    close: () => calls.close(),
  };
}

function explainUnreachable(error: unknown, address: string): unknown {
  const failure = connectionFailure(error);
  if (failure === undefined) return error;
  return unavailable(
    unreachableMessage("IPAM", new Map([[address, failure]]), "start it (trellis ipam), or give the planner its address (trellis planner --ipam=HOST:PORT, or TRELLIS_IPAM_ADDR)"),
  );
}

function ipamCalls(address: string, tls: LoadedTls | undefined): IpamCalls {
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
