import { randomUUID } from "node:crypto";
import { ControlApi, DEFAULT_TIMEOUT_MS } from "../../libs/control-client/index.js";
import { clientCredentials } from "../../libs/grpc/credentials.js";
import { UsageError } from "./parse.js";
import { settings } from "./settings.js";

/** `--timeout=SECONDS`, which every client command takes. */
export const timeoutFlag = { timeout: { type: "string" } } as const;

/**
 * The Control API at TRELLIS_PLANNER_ADDR (one or more replicas), over mutual TLS when TRELLIS_TLS_* say so. A call
 * that meets a planner restarting or failing over is retried until `--timeout` (30 s by default), saying why once. A
 * planner that is nowhere is said at once, unless --timeout was given: the user then said how long to wait for one.
 */
export function controlClient(timeout: string | undefined, usage: string): ControlApi {
  const timeoutMs = timeout === undefined ? DEFAULT_TIMEOUT_MS : timeoutMsOf(timeout, usage);
  let told = false;
  return new ControlApi({
    addresses: settings.plannerAddress(),
    credentials: clientCredentials(settings.tls()),
    timeoutMs,
    waitForPlanner: timeout !== undefined,
    onRetry: ({ reason }) => {
      if (told) return;
      told = true;
      console.error(`Note: ${reason}; retrying for up to ${timeoutMs / 1000} s (--timeout=SECONDS)`);
    },
  });
}

function timeoutMsOf(text: string, usage: string): number {
  const seconds = Number(text);
  if (text.trim() === "" || !Number.isFinite(seconds) || seconds <= 0) {
    throw new UsageError(`invalid --timeout "${text}": expected a number of seconds greater than 0, e.g. 30`, usage);
  }
  return seconds * 1000;
}

/** Every mutating call is an intent with its own id: a retried call is then applied once. */
export function newIntentId(): string {
  return randomUUID();
}
