import { ControlService } from "../../libs/proto/gen/trellis/v1/control.js";
import { accessPolicy } from "../../libs/grpc/authorise.js";
import type { Role } from "../../libs/tls/identity.js";

const READ: readonly Role[] = ["operator", "controller", "reader"];
/** An agent too, for the CNI plugins of its host (link-agent/local-api): on its own host only (host-scope.ts). */
const ATTACH: readonly Role[] = ["operator", "controller", "agent"];
const SHAPE: readonly Role[] = ["operator"];

/**
 * Who may call the Control API with TLS on: operators everything; controllers (schedulers) attach and detach
 * containers but not make or remove networks; agents attach and detach containers of their own host; readers list
 * and inspect.
 */
export const CONTROL_ACCESS = accessPolicy(ControlService, {
  createNetwork: SHAPE,
  deleteNetwork: SHAPE,
  attachEndpoint: ATTACH,
  detachEndpoint: ATTACH,
  // The agent's local API asks it for the plugins' STATUS and CHECK.
  inspectNetwork: [...READ, "agent"],
  listNetworks: READ,
  listEndpoints: READ,
  inspectEndpoint: READ,
  getClusterStatus: READ,
});
