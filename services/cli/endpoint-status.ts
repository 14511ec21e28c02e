import type { KV, KvEntry } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, statusKey } from "../../libs/bus/subjects.js";
import { EndpointState, EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { DroppedRecords, RecordVerifier } from "../../libs/tls/record-signature.js";
import { settings } from "./settings.js";

const statusCodec = codecOf(EndpointStatus);

/** How long a container may take to come up: the lab's emulated kernel is slow. */
export const STATUS_TIMEOUT_MS = Number(process.env.TRELLIS_WAIT_SECONDS ?? 120) * 1000;

/**
 * Waits until the host's agent reports the endpoint ready or failed, or (gone = true) until its status
 * is removed, which the agent does once the container's namespace is gone.
 */
export async function waitForStatus(endpoint: Endpoint, gone: boolean): Promise<EndpointStatus | undefined> {
  const nc = await connectBus({ servers: settings.natsUrl(), name: "trellis-cli", waitForServer: false });
  try {
    const bucket = await openBucket(nc, Buckets.status);
    const tls = settings.tls();
    return await watchUntil(bucket, statusKey(endpoint.host, endpoint.id), gone, endpoint, tls && new RecordVerifier(tls.ca));
  } finally {
    await nc.close();
  }
}

/** `verifier`: with TLS, a status its host's agent did not sign is passed over (and said once). */
export async function watchUntil(bucket: KV, key: string, gone: boolean, endpoint: Endpoint, verifier?: RecordVerifier): Promise<EndpointStatus | undefined> {
  const dropped = new DroppedRecords((line) => console.error(`Warning: ${line}`));
  if (gone && !isPresent(await bucket.get(key))) return undefined;
  const watch = await bucket.watch({ key });
  const timer = setTimeout(() => watch.stop(), STATUS_TIMEOUT_MS);
  try {
    for await (const entry of watch) {
      if (gone && entry.operation !== "PUT") return undefined;
      if (gone || entry.operation !== "PUT") continue;
      const status = statusCodec.decode(entry.value);
      const problem = verifier?.problem(statusCodec, status, endpoint.host);
      if (problem) {
        dropped.drop(`status of container ${endpoint.container} of host ${endpoint.host}`, problem);
        continue;
      }
      if (status.state === EndpointState.ENDPOINT_STATE_READY || status.state === EndpointState.ENDPOINT_STATE_FAILED) return status;
    }
    throw new Error(
      `timed out after ${STATUS_TIMEOUT_MS / 1000}s waiting for container ${endpoint.container} on host ${endpoint.host}: is the agent of ${endpoint.host} running (trellis agent --host=${endpoint.host})?`,
    );
  } finally {
    clearTimeout(timer);
  }
}

function isPresent(entry: KvEntry | null): boolean {
  return entry?.operation === "PUT";
}
