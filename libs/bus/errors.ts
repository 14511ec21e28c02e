import { errors } from "@nats-io/transport-node";

/**
 * NATS did not answer in time, or the connection is down or reconnecting: the same call may well succeed
 * soon (a JetStream leader election takes seconds). Services answer it as UNAVAILABLE, which callers retry.
 */
export class BusUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "BusUnavailableError";
  }
}

/** Whether an error from the bus means "try again": a timeout, no responder yet, or a connection being remade. */
export function isBusUnavailable(error: unknown): boolean {
  return (
    error instanceof BusUnavailableError ||
    error instanceof errors.TimeoutError ||
    error instanceof errors.NoRespondersError ||
    error instanceof errors.ConnectionError ||
    error instanceof errors.ClosedConnectionError ||
    error instanceof errors.DrainingConnectionError
  );
}
