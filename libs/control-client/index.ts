// A client of the Control API for controllers and the CLI: failover across planner replicas, retries with
// one intent id per intent, typed errors. See ControlApi.
export { addressList, DEFAULT_PLANNER_ADDRESS } from "./addresses.js";
export { ControlApi, DEFAULT_TIMEOUT_MS, type ControlApiOptions, type IntentOptions } from "./client.js";
export { ControlError, ControlRefusedError, ControlTimeoutError, PlannerUnreachableError } from "./errors.js";
export type { RetryEvent } from "./retry.js";
export { TranslatedControlApi } from "./translated.js";
