import { IpamService } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { accessPolicy } from "../../libs/grpc/authorise.js";
import type { Role } from "../../libs/tls/identity.js";

/** With TLS on, only the planner calls IPAM: every address goes through the planner's validation. */
const PLANNER: readonly Role[] = ["planner"];

export const IPAM_ACCESS = accessPolicy(IpamService, {
  allocateSubnets: PLANNER,
  releaseSubnets: PLANNER,
  allocateAddress: PLANNER,
  releaseAddresses: PLANNER,
  listAllocations: PLANNER,
  listBlocks: PLANNER,
  addressCalls: PLANNER,
});
