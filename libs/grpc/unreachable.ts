import { status } from "@grpc/grpc-js";
import { isServiceError } from "./status-error.js";

/**
 * Why a gRPC call could not reach its server at all, in a person's words, or undefined when the server was
 * reached (whatever it answered). grpc-js reports these as UNAVAILABLE with its own raw text
 * ("No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7710. Resolution note: ").
 */
export function connectionFailure(error: unknown): string | undefined {
  if (!isServiceError(error) || error.code !== status.UNAVAILABLE) return undefined;
  const details = error.details ?? "";
  if (/Name resolution failed/.test(details)) return NO_SUCH_HOST;
  if (!/No connection established/.test(details)) return undefined;
  if (/ECONNREFUSED/.test(details)) return CONNECTION_REFUSED;
  if (/ENOTFOUND|EAI_AGAIN/.test(details)) return NO_SUCH_HOST;
  if (/EHOSTUNREACH|ENETUNREACH/.test(details)) return "host unreachable";
  if (/ETIMEDOUT/.test(details)) return "connection timed out";
  return "no connection could be made";
}

export const CONNECTION_REFUSED = "connection refused";
export const NO_SUCH_HOST = "no such host";

/** Definite answers that nothing serves at the address now, as opposed to a network that is slow or lossy. */
export function isDefinite(failure: string | undefined): boolean {
  return failure === CONNECTION_REFUSED || failure === NO_SUCH_HOST;
}

/**
 * "failed to reach the planner at 127.0.0.1:7710: connection refused; <remedy>", or with several addresses
 * each one's cause when they differ.
 */
export function unreachableMessage(service: string, failures: ReadonlyMap<string, string>, remedy: string): string {
  const causes = new Set(failures.values());
  const where =
    causes.size === 1
      ? `${[...failures.keys()].join(", ")}: ${[...causes][0]}`
      : [...failures].map(([address, cause]) => `${address} (${cause})`).join(", ");
  return `failed to reach ${service} at ${where}; ${remedy}`;
}
