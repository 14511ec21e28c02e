import { status, type Metadata } from "@grpc/grpc-js";

/** How a ControlApi call fails: the planner refused it, none could be reached, or the deadline passed. */
export abstract class ControlError extends Error {}

/**
 * The planner answered and refused the call (invalid argument, not found, already exists, ...): retrying the
 * same call would be refused again. `code` and `details` are the gRPC status, as on a grpc-js ServiceError,
 * so that code written for one handles the other.
 */
export class ControlRefusedError extends ControlError {
  readonly details: string;
  constructor(
    readonly code: status,
    details: string,
    readonly metadata?: Metadata,
  ) {
    super(details);
    this.name = "ControlRefusedError";
    this.details = details;
  }
}

/**
 * No planner could be reached: every address refused the connection or named no host, at once. Said
 * without waiting out the deadline, since nothing suggests that a planner is about to appear.
 */
export class PlannerUnreachableError extends ControlError {
  constructor(
    /** Each address tried, with why it could not be reached. */
    readonly failures: ReadonlyMap<string, string>,
    message: string,
  ) {
    super(message);
    this.name = "PlannerUnreachableError";
  }
}

/** Every attempt until the deadline failed with an error that means "try again"; `lastError` is the last one. */
export class ControlTimeoutError extends ControlError {
  constructor(
    readonly timeoutMs: number,
    readonly attempts: number,
    readonly lastError: Error,
    message: string,
  ) {
    super(message);
    this.name = "ControlTimeoutError";
  }
}
