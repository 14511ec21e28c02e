import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { isBusUnavailable } from "../bus/errors.js";

/** An error that knows which gRPC status it is; services throw these, handlers send them as they are. */
export class StatusError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = "StatusError";
  }
}

export const invalidArgument = (message: string) => new StatusError(status.INVALID_ARGUMENT, message);
export const notFound = (message: string) => new StatusError(status.NOT_FOUND, message);
export const alreadyExists = (message: string) => new StatusError(status.ALREADY_EXISTS, message);
export const failedPrecondition = (message: string) => new StatusError(status.FAILED_PRECONDITION, message);
export const resourceExhausted = (message: string) => new StatusError(status.RESOURCE_EXHAUSTED, message);
/** Not now, but a retry may succeed: the service is catching up or a dependency is down. */
export const unavailable = (message: string) => new StatusError(status.UNAVAILABLE, message);
/** The store changed under us more often than we are willing to retry. */
export const aborted = (message: string) => new StatusError(status.ABORTED, message);

/** What a unary handler passes to its callback for any thrown error. */
export function toServiceError(error: unknown): Partial<ServiceError> {
  if (error instanceof StatusError) return { code: error.code, details: error.message, metadata: new Metadata() };
  if (isServiceError(error)) return { code: error.code, details: error.details, metadata: new Metadata() };
  // NATS not answering in time (a leader election, a reconnect) is worth the caller's retry.
  if (isBusUnavailable(error)) return { code: status.UNAVAILABLE, details: `${(error as Error).message}; try again`, metadata: new Metadata() };
  return { code: status.INTERNAL, details: (error as Error).message, metadata: new Metadata() };
}

export function isServiceError(error: unknown): error is ServiceError {
  return error instanceof Error && typeof (error as ServiceError).code === "number" && "details" in error;
}

/** The text a person should read for an error from a gRPC call (no "3 INVALID_ARGUMENT:" prefix). */
export function describeError(error: unknown): string {
  if (isServiceError(error)) {
    if (error.code === status.UNAVAILABLE) return `service unavailable: ${error.details}`;
    return error.details;
  }
  return (error as Error).message;
}
