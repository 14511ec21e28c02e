import { ControlService } from "../../libs/proto/gen/trellis/v1/control.js";
import { accessPolicy } from "../../libs/grpc/authorise.js";
import type { Role } from "../../libs/tls/identity.js";

const READ: readonly Role[] = ["operator", "controller", "reader"];
const ATTACH: readonly Role[] = ["operator", "controller"];
const SHAPE: readonly Role[] = ["operator"];

/**
 * Who may call the Control API with TLS on: operators everything; controllers (schedulers) attach and detach
 * containers but not make or remove networks; readers list and inspect.
 */
export const CONTROL_ACCESS = accessPolicy(ControlService, {
  createNetwork: SHAPE,
  deleteNetwork: SHAPE,
  attachEndpoint: ATTACH,
  detachEndpoint: ATTACH,
  inspectNetwork: READ,
  listNetworks: READ,
  listEndpoints: READ,
  inspectEndpoint: READ,
  getClusterStatus: READ,
});
