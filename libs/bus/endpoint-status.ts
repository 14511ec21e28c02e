import type { KV } from "@nats-io/kv";
import { EndpointState, EndpointStatus } from "../proto/gen/trellis/v1/state.js";
import { DroppedRecords, type RecordVerifier } from "../tls/record-signature.js";
import { codecOf } from "./codec.js";
import { statusKey } from "./subjects.js";

const statusCodec = codecOf(EndpointStatus);

/** How long a container may take to come up (TRELLIS_WAIT_SECONDS): the lab's emulated kernel is slow. */
export const STATUS_WAIT_MS = Number(process.env.TRELLIS_WAIT_SECONDS ?? 120) * 1000;

/** Which endpoint's status to wait for: its host's agent reports it under statusKey(host, id). */
export interface StatusOf {
  id: string;
  host: string;
  container: string;
}

export interface StatusWait {
  timeoutMs?: number;
  /** With TLS: a status its host's agent did not sign is passed over, and said once through `warn`. */
  verifier?: RecordVerifier | undefined;
  warn?: (line: string) => void;
}

/** The agent did not report in time: most often it is not running, or it cannot reach NATS. */
export class StatusTimeoutError extends Error {
  constructor(endpoint: StatusOf, timeoutMs: number, what: string) {
    super(
      `timed out after ${timeoutMs / 1000}s waiting for the agent of host ${endpoint.host} to ${what} container ${endpoint.container}: is it running (trellis agent --host=${endpoint.host})? See its log`,
    );
    this.name = "StatusTimeoutError";
  }
}

/** Waits until the endpoint's agent reports it ready or failed; throws StatusTimeoutError after the timeout. */
export async function settledStatus(bucket: KV, endpoint: StatusOf, wait: StatusWait = {}): Promise<EndpointStatus> {
  const timeoutMs = wait.timeoutMs ?? STATUS_WAIT_MS;
  const dropped = new DroppedRecords(wait.warn ?? ((line) => console.error(`Warning: ${line}`)));
  const watch = await bucket.watch({ key: statusKey(endpoint.host, endpoint.id) });
  const timer = setTimeout(() => watch.stop(), timeoutMs);
  try {
    for await (const entry of watch) {
      if (entry.operation !== "PUT") continue;
      const status = statusCodec.decode(entry.value);
      const problem = wait.verifier?.problem(statusCodec, status, endpoint.host);
      if (problem) {
        dropped.drop(`status of container ${endpoint.container} of host ${endpoint.host}`, problem);
        continue;
      }
      if (status.state === EndpointState.ENDPOINT_STATE_READY || status.state === EndpointState.ENDPOINT_STATE_FAILED) return status;
    }
    throw new StatusTimeoutError(endpoint, timeoutMs, "make");
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Waits until the endpoint's status is removed, which its agent does once the link is gone; throws
 * StatusTimeoutError after the timeout. A removal between the get and the watch is the watch's first entry: it
 * starts from the key's last value.
 */
export async function statusRemoved(bucket: KV, endpoint: StatusOf, timeoutMs = STATUS_WAIT_MS): Promise<void> {
  if ((await bucket.get(statusKey(endpoint.host, endpoint.id)))?.operation !== "PUT") return;
  const watch = await bucket.watch({ key: statusKey(endpoint.host, endpoint.id) });
  const timer = setTimeout(() => watch.stop(), timeoutMs);
  try {
    for await (const entry of watch) if (entry.operation !== "PUT") return;
    throw new StatusTimeoutError(endpoint, timeoutMs, "remove");
  } finally {
    clearTimeout(timer);
  }
}
