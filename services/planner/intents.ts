import { status } from "@grpc/grpc-js";
import type { IntentResult } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { describeError, StatusError, toServiceError } from "../../libs/grpc/status-error.js";
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

/** Intents being applied in this process: a replay that arrives meanwhile waits for the first outcome. */
const applying = new Map<string, Promise<IntentOutcome>>();

/**
 * Runs an intent once: the first run's outcome is kept under the intent id, and a replay of the same id
 * answers with it (or throws the same error) without touching any state. A replay while the first run is
 * still going waits for it rather than running again (and finding its own container "already in use").
 */
export function applyOnce(store: PlannerStore, intentId: string, apply: () => Promise<IntentOutcome>): Promise<IntentOutcome> {
  if (intentId === "") return apply();
  const running = applying.get(intentId);
  if (running) return running;
  const run = applyAndRecord(store, intentId, apply).finally(() => applying.delete(intentId));
  applying.set(intentId, run);
  return run;
}

async function applyAndRecord(store: PlannerStore, intentId: string, apply: () => Promise<IntentOutcome>): Promise<IntentOutcome> {
  const previous = await store.getIntentResult(intentId);
  if (previous) return replay(previous);
  let outcome: IntentOutcome;
  try {
    outcome = await apply();
  } catch (error) {
    const code = errorCode(error);
    if (!FINAL_CODES.has(code)) throw error;
    return replay(await store.recordIntentResult({ intentId, code, message: describeError(error), network: undefined, endpoint: undefined }));
  }
  return replay(await store.recordIntentResult({ intentId, code: status.OK, message: "", network: outcome.network, endpoint: outcome.endpoint }));
}

function replay(result: IntentResult): IntentOutcome {
  if (result.code !== status.OK) throw new StatusError(result.code, result.message);
  return { network: result.network, endpoint: result.endpoint };
}

export function errorCode(error: unknown): number {
  return toServiceError(error).code ?? status.INTERNAL;
}
