import { credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import {
  IpamClient,
  type AllocateAddressRequest,
  type AllocateAddressResponse,
  type AllocateSubnetsRequest,
  type AllocateSubnetsResponse,
  type ListAllocationsResponse,
  type ListBlocksResponse,
} from "../../libs/proto/gen/trellis/v1/ipam.js";
import { traceContextInterceptor } from "../../libs/telemetry/grpc-context.js";

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
  const client = new IpamClient(address, credentials.createInsecure(), { interceptors: [traceContextInterceptor] });
  const call = <Req, Res>(method: (req: Req, md: Metadata, cb: (e: ServiceError | null, r: Res) => void) => unknown, request: Req) =>
    new Promise<Res>((resolve, reject) =>
      method.call(client, request, new Metadata(), (error, response) => (error ? reject(error) : resolve(response))),
    );
  return {
    allocateSubnets: (request) => call(client.allocateSubnets, request),
    releaseSubnets: async (networkId) => {
      await call(client.releaseSubnets, { networkId });
    },
    allocateAddress: (request) => call(client.allocateAddress, request),
    releaseAddresses: async (networkId, endpointId) => {
      await call(client.releaseAddresses, { networkId, endpointId });
    },
    listAllocations: (networkId) => call(client.listAllocations, { networkId }),
    listBlocks: (networkId, host = "") => call(client.listBlocks, { networkId, host }),
    close: () => client.close(),
  };
}
