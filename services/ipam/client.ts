import {
  IpamClient,
  type AllocateAddressRequest,
  type AllocateAddressResponse,
  type AllocateSubnetsRequest,
  type AllocateSubnetsResponse,
  type ListAllocationsResponse,
  type ListBlocksResponse,
} from "../../libs/proto/gen/trellis/v1/ipam.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";

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

export function connectIpam(address: string): IpamCalls {
  const client = new IpamClient(address, insecure(), clientOptions);
  return {
    allocateSubnets: (request) => callUnary(client.allocateSubnets.bind(client), request),
    releaseSubnets: async (networkId) => {
      await callUnary(client.releaseSubnets.bind(client), { networkId });
    },
    allocateAddress: (request) => callUnary(client.allocateAddress.bind(client), request),
    releaseAddresses: async (networkId, endpointId) => {
      await callUnary(client.releaseAddresses.bind(client), { networkId, endpointId });
    },
    listAllocations: (networkId) => callUnary(client.listAllocations.bind(client), { networkId }),
    listBlocks: (networkId, host = "") => callUnary(client.listBlocks.bind(client), { networkId, host }),
    close: () => client.close(),
  };
}
