import { status } from "@grpc/grpc-js";
import { StatusError } from "../../libs/grpc/status-error.js";
import type { Identity } from "../../libs/tls/identity.js";

/**
 * An agent attaches and detaches containers for the CNI plugins of its own host (link-agent/local-api), and no other
 * host's: a stolen agent key then reaches one host's containers, as it already reaches that host's kernel.
 * `host`: the container's host; undefined when there is no such container (the planner says so itself).
 */
export function checkHostScope(caller: Identity | undefined, host: string | undefined, what: "attach" | "detach"): void {
  if (caller?.role !== "agent" || host === undefined || host === caller.name) return;
  throw new StatusError(status.PERMISSION_DENIED, `agent "${caller.name}" may ${what} containers on its own host only, not on host ${host}`);
}
