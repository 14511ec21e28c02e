import { status, type ServiceError } from "@grpc/grpc-js";
import { describeError, isServiceError } from "../grpc/status-error.js";
import { connectionFailure, isDefinite, unreachableMessage } from "../grpc/unreachable.js";
import { ControlRefusedError, ControlTimeoutError, PlannerUnreachableError } from "./errors.js";

/**
 * Statuses that mean "not now": the planner is restarting, a replica is gone, NATS is electing a leader, the
 * store changed under it. The call is made again with the same intent id, so a first attempt that was in
 * fact applied is answered from its recorded result, never applied twice.
 */
const RETRYABLE = new Set<number>([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.ABORTED]);

const FIRST_PAUSE_MS = 50;
const MAX_PAUSE_MS = 1_000;
/** What an attempt needs at the least; with less left before the deadline, the call gives up. */
const LAST_ATTEMPT_MS = 20;

export const PLANNER_REMEDY = "start it (trellis planner), or set TRELLIS_PLANNER_ADDR to where it runs";

export interface RetryPolicy {
  addresses: readonly string[];
  timeoutMs: number;
  /** The most one attempt may take: a replica that hangs must leave time to ask another. */
  attemptTimeoutMs: number;
  /** Keep retrying even when every address refuses the connection on the first round. */
  waitForPlanner: boolean;
  onRetry?: (retry: RetryEvent) => void;
}

/** Told before each pause: which address failed, and how. */
export interface RetryEvent {
  address: string;
  attempt: number;
  /** What went wrong, in a person's words. */
  reason: string;
  error: Error;
}

/** Remembers which address answered last, so that the next call starts there. */
export class AddressRotation {
  private preferred = 0;
  constructor(readonly addresses: readonly string[]) {}

  nth(attempt: number): number {
    return (this.preferred + attempt) % this.addresses.length;
  }

  answered(index: number): void {
    this.preferred = index;
  }
}

/**
 * Makes `attempt` on one address after another until one answers, a refusal comes, or the deadline passes.
 * `attempt` gets the address's index and the attempt's own deadline (epoch ms).
 */
export async function withRetries<T>(policy: RetryPolicy, rotation: AddressRotation, attempt: (index: number, deadline: number) => Promise<T>): Promise<T> {
  const deadline = Date.now() + policy.timeoutMs;
  const firstRound = new Map<string, string>();
  /** Each address's last connection failure; an address that answered since is not in it. */
  const unreachable = new Map<string, string>();
  for (let n = 0; ; n++) {
    const index = rotation.nth(n);
    const address = policy.addresses[index]!;
    try {
      const result = await attempt(index, Math.min(deadline, Date.now() + policy.attemptTimeoutMs));
      rotation.answered(index);
      return result;
    } catch (error) {
      if (!isServiceError(error)) throw error;
      if (!RETRYABLE.has(error.code)) throw new ControlRefusedError(error.code, error.details, error.metadata);
      const failure = connectionFailure(error);
      if (failure) unreachable.set(address, failure);
      else unreachable.delete(address);
      if (n < policy.addresses.length) firstRound.set(address, failure ?? describeError(error));
      if (n === policy.addresses.length - 1 && !policy.waitForPlanner && [...firstRound.values()].every(isDefinite)) {
        throw new PlannerUnreachableError(firstRound, unreachableMessage("the planner", firstRound, PLANNER_REMEDY));
      }
      const reason = reasonOf(error, address, failure, policy.attemptTimeoutMs);
      const left = deadline - Date.now();
      if (left < LAST_ATTEMPT_MS) {
        const last = unreachable.size === policy.addresses.length ? unreachableMessage("the planner", unreachable, PLANNER_REMEDY) : reason;
        throw new ControlTimeoutError(policy.timeoutMs, n + 1, error, `gave up after ${seconds(policy.timeoutMs)} s of retries: ${last}`);
      }
      // Moving on to the next replica in the first round is failover as it should be, not worth a word.
      if (n >= policy.addresses.length - 1) policy.onRetry?.({ address, attempt: n + 1, reason, error });
      await new Promise((resolve) => setTimeout(resolve, Math.min(pauseBefore(n + 1), left - LAST_ATTEMPT_MS)));
    }
  }
}

/** What went wrong with one attempt, for a person: where, and the planner's own words when it answered. */
function reasonOf(error: ServiceError, address: string, failure: string | undefined, attemptTimeoutMs: number): string {
  if (failure) return unreachableMessage("the planner", new Map([[address, failure]]), PLANNER_REMEDY);
  if (error.code === status.DEADLINE_EXCEEDED) return `the planner at ${address} did not answer within ${seconds(attemptTimeoutMs)} s`;
  return `the planner at ${address}: ${error.details}`;
}

/** Doubling from 50 ms to at most a second, with jitter so that many clients do not retry in step. */
function pauseBefore(retry: number): number {
  const ceiling = Math.min(MAX_PAUSE_MS, FIRST_PAUSE_MS * 2 ** (retry - 1));
  return ceiling / 2 + (Math.random() * ceiling) / 2;
}

function seconds(ms: number): string {
  return String(Math.round(ms / 100) / 10);
}
