import type { ServiceError } from "@grpc/grpc-js";

/** The error a gRPC call that must fail failed with; the test fails if the call succeeds. */
export async function refusal(promise: Promise<unknown>): Promise<ServiceError> {
  try {
    await promise;
  } catch (error) {
    return error as ServiceError;
  }
  throw new Error("expected the call to fail");
}
