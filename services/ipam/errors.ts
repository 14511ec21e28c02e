import { status } from "@grpc/grpc-js";

/** An IPAM refusal that a caller can act on: the gRPC status it maps to travels with it. */
export class IpamError extends Error {
  constructor(
    readonly code: status,
    message: string,
  ) {
    super(message);
    this.name = "IpamError";
  }
}

export const invalidArgument = (message: string) => new IpamError(status.INVALID_ARGUMENT, message);
export const alreadyExists = (message: string) => new IpamError(status.ALREADY_EXISTS, message);
export const resourceExhausted = (message: string) => new IpamError(status.RESOURCE_EXHAUSTED, message);
export const notFound = (message: string) => new IpamError(status.NOT_FOUND, message);
/** The bucket changed under us more often than we are willing to retry. */
export const aborted = (message: string) => new IpamError(status.ABORTED, message);
