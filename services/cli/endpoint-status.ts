import type { KV } from "@nats-io/kv";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { settledStatus, statusRemoved } from "../../libs/bus/endpoint-status.js";
import { Buckets } from "../../libs/bus/subjects.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import type { EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import { RecordVerifier } from "../../libs/tls/record-signature.js";
import { settings } from "./settings.js";

/** Waits until the host's agent reports the endpoint ready or failed. */
export function waitForStatus(endpoint: Endpoint): Promise<EndpointStatus> {
  return withStatusBucket((bucket) => {
    const tls = settings.tls();
    return settledStatus(bucket, endpoint, { verifier: tls && new RecordVerifier(tls.ca) });
  });
}

/** Waits until the host's agent reports the endpoint's link removed, which it does once the namespace is gone. */
export function waitForRemoval(endpoint: Endpoint): Promise<void> {
  return withStatusBucket((bucket) => statusRemoved(bucket, endpoint));
}

async function withStatusBucket<T>(work: (bucket: KV) => Promise<T>): Promise<T> {
  const nc = await connectBus({ servers: settings.natsUrl(), name: "trellis-cli", waitForServer: false });
  try {
    return await work(await openBucket(nc, Buckets.status));
  } finally {
    await nc.close();
  }
}
