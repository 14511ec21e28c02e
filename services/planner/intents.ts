import { status } from "@grpc/grpc-js";
import type { IntentResult } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { describeError, isServiceError, StatusError } from "../../libs/grpc/status-error.js";
import type { PlannerStore } from "./store.js";

/** Outcomes that a replay must see again; anything else (an unavailable IPAM, say) is worth retrying. */
const FINAL_CODES = new Set<number>([
  status.OK,
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
]);

export interface IntentOutcome {
  network?: Network;
  endpoint?: Endpoint;
}

/**
 * Runs an intent once: the first run's outcome is kept under the intent id, and a replay of the same id
 * answers with it (or throws the same error) without touching any state.
 */
export async function applyOnce(
  store: PlannerStore,
  intentId: string,
  apply: () => Promise<IntentOutcome>,
): Promise<IntentOutcome> {
  if (intentId === "") return apply();
  const previous = await store.getIntentResult(intentId);
  if (previous) return replay(previous);
  try {
    const outcome = await apply();
    await store.putIntentResult({ intentId, code: status.OK, message: "", network: outcome.network, endpoint: outcome.endpoint });
    return outcome;
  } catch (error) {
    const code = errorCode(error);
    if (FINAL_CODES.has(code)) {
      await store.putIntentResult({ intentId, code, message: describeError(error), network: undefined, endpoint: undefined });
    }
    throw error;
  }
}

function replay(result: IntentResult): IntentOutcome {
  if (result.code !== status.OK) throw new StatusError(result.code, result.message);
  return { network: result.network, endpoint: result.endpoint };
}

export function errorCode(error: unknown): number {
  if (error instanceof StatusError) return error.code;
  if (isServiceError(error)) return error.code;
  return status.INTERNAL;
}
