import { status } from "@grpc/grpc-js";
import { toServiceError } from "../grpc/status-error.js";

/**
 * A request's outcome as a bounded label: ok; refused (the caller asked for something the cluster will not do:
 * bad input, a name taken, a host that cannot, a pool full); error (anything else, worth retrying).
 */
export type Outcome = "ok" | "refused" | "error";

const REFUSALS = new Set<number>([
  status.INVALID_ARGUMENT,
  status.NOT_FOUND,
  status.ALREADY_EXISTS,
  status.FAILED_PRECONDITION,
  status.RESOURCE_EXHAUSTED,
  status.OUT_OF_RANGE,
]);

export function outcomeOf(error: unknown): Outcome {
  return REFUSALS.has(toServiceError(error).code ?? status.INTERNAL) ? "refused" : "error";
}

/** Runs `work`, then reports its outcome and how long it took in seconds. */
export async function measured<T>(work: () => Promise<T>, report: (outcome: Outcome, seconds: number) => void): Promise<T> {
  const started = process.hrtime.bigint();
  const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
  try {
    const result = await work();
    report("ok", seconds());
    return result;
  } catch (error) {
    report(outcomeOf(error), seconds());
    throw error;
  }
}
