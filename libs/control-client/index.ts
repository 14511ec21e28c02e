// A client of the Control API for controllers and the CLI: failover across planner replicas, retries with
// one intent id per intent, typed errors. See ControlApi.
export { ControlApi, DEFAULT_PLANNER_ADDRESS, DEFAULT_TIMEOUT_MS, addressList, type ControlApiOptions, type IntentOptions } from "./client.js";
export { ControlError, ControlRefusedError, ControlTimeoutError, PlannerUnreachableError } from "./errors.js";
export type { RetryEvent } from "./retry.js";
