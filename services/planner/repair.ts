import type { KV } from "@nats-io/kv";
import { sameBytes, type MessageCodec } from "../../libs/bus/codec.js";
import { FollowedBucket } from "../../libs/bus/follow.js";
import { getValue } from "../../libs/bus/kv.js";
import { Buckets, desiredKey, isHostShimKey, nameKey } from "../../libs/bus/subjects.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import type { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import type { RecordVerifier, Signed } from "../../libs/tls/record-signature.js";
import { isOrphanHostShim } from "./host-shim.js";
import { endpointCodec, nameCodec, nameEntryOf, type PlannerStore } from "./store.js";

/** An endpoint younger than this may be an attach that has not published it yet. */
const ATTACH_IN_FLIGHT_MS = 30_000;

export interface RepairCount {
  /** Keys written because they were missing or held other bytes. */
  rewritten: number;
  /** Keys of endpoints that no longer exist. */
  removed: number;
}

/**
 * The level-triggered safety net of desired state: compares what the planner would write for every endpoint
 * (its host's key, its name) with what the desired and names buckets hold, and writes only what differs (with
 * TLS, a value no planner signed differs too: the agents would not believe it). It
 * repairs a publish that failed half way, a key someone deleted or overwrote, and an agent's lost state. A
 * difference is acted on only after the endpoint's own key confirms it, since the view may lag behind
 * another replica's attach or detach. This pass reads whole buckets: it runs at start and then periodically,
 * never on the path of an intent.
 */
export async function repairPublished(store: PlannerStore, inFlightMs: number, now = Date.now()): Promise<RepairCount> {
  await store.view.catchUp();
  const all = store.view.allEndpoints();
  // An attach under way has made its endpoint and not yet published it: that is no damage.
  const endpoints = all.filter((endpoint) => now - Date.parse(endpoint.createdAt) > inFlightMs);
  const count: RepairCount = { rewritten: 0, removed: 0 };
  const checks: [bucket: "desired" | "names", KV, wanted: Map<string, { container: string; record: Endpoint | NameEntry }>][] = [
    ["desired", store.buckets.desired, new Map(endpoints.map((e) => [desiredKey(e.host, e.id), { container: e.container, record: e }]))],
    ["names", store.buckets.names, new Map(endpoints.map((e) => [nameKey(e.networkId, e.container), { container: e.container, record: nameEntryOf(e) }]))],
  ];
  const verifier = store.trust?.verifier;
  for (const [bucket, kv, wanted] of checks) {
    const stored = await snapshot(kv, Buckets[bucket]);
    for (const [key, { container, record }] of wanted) {
      const right = bucket === "desired" ? rightlyStored(endpointCodec, stored.get(key), record as Endpoint, verifier) : rightlyStored(nameCodec, stored.get(key), record as NameEntry, verifier);
      if (right) continue;
      const current = await currentEndpoint(store, container);
      const still = current && (bucket === "desired" ? desiredKey(current.host, current.id) === key : nameKey(current.networkId, current.container) === key);
      if (!still) continue;
      await store.repairKey(bucket, key, bucket === "desired" ? current : nameEntryOf(current));
      count.rewritten++;
    }
    const known = new Set(all.map((e) => (bucket === "desired" ? desiredKey(e.host, e.id) : nameKey(e.networkId, e.container))));
    for (const key of stored.keys()) {
      if (known.has(key)) continue;
      // A host's shim is no endpoint's: it goes once its network has (services/planner/host-shim.ts).
      if (bucket === "desired" && isHostShimKey(key)) {
        if (!(await isOrphanHostShim(store.buckets.networks, stored.get(key)!))) continue;
        await store.repairKey(bucket, key, undefined);
        count.removed++;
        continue;
      }
      const container = containerOfStored(bucket, stored.get(key)!);
      const current = container === undefined ? undefined : await currentEndpoint(store, container);
      const wantedNow = current && (bucket === "desired" ? desiredKey(current.host, current.id) : nameKey(current.networkId, current.container));
      if (wantedNow === key) continue;
      await store.repairKey(bucket, key, undefined);
      count.removed++;
    }
  }
  return count;
}

/**
 * Whether the stored bytes hold the wanted record as the agents will believe it: the same content (a signature
 * differs at every signing) and, with TLS, a planner's valid signature.
 */
function rightlyStored<T extends Signed>(codec: MessageCodec<T>, bytes: Uint8Array | undefined, wanted: T, verifier: RecordVerifier | undefined): boolean {
  if (!bytes) return false;
  let stored: T;
  try {
    stored = codec.decode(bytes);
  } catch {
    return false;
  }
  if (verifier?.serviceProblem(codec, stored, "planner")) return false;
  return sameBytes(codec.encode({ ...stored, signature: undefined }), codec.encode({ ...wanted, signature: undefined }));
}

/** The endpoint as its own key says now, not as the view remembers it. */
async function currentEndpoint(store: PlannerStore, container: string): Promise<Endpoint | undefined> {
  return (await getValue(store.buckets.endpoints, endpointCodec, container))?.value;
}

/** Which container a stored value is for; undefined for bytes that are no value of that bucket (garbage). */
function containerOfStored(bucket: "desired" | "names", bytes: Uint8Array): string | undefined {
  try {
    return bucket === "desired" ? endpointCodec.decode(bytes).container : nameCodec.decode(bytes).name;
  } catch {
    return undefined;
  }
}

/** Every live key's bytes, read once through a watch that stops as soon as the stored values are in. */
async function snapshot(kv: KV, bucketName: string): Promise<Map<string, Uint8Array>> {
  const values = new Map<string, Uint8Array>();
  const follower = await FollowedBucket.start(kv, {
    bucketName,
    onEntry: (entry) => {
      if (entry.operation === "PUT") values.set(entry.key, entry.value);
      else values.delete(entry.key);
    },
  });
  follower.stop();
  return values;
}

/** Runs the repair at start and every `intervalMs`, one pass at a time, logging what it changed. */
export function scheduleRepair(store: PlannerStore, intervalMs: number, log: (line: string) => void): () => void {
  let running: Promise<void> | undefined;
  const pass = () => {
    if (running) return;
    running = repairPublished(store, Math.min(ATTACH_IN_FLIGHT_MS, intervalMs))
      .then(({ rewritten, removed }) => {
        if (rewritten + removed > 0) log(`repaired desired state: ${rewritten} key(s) rewritten, ${removed} removed`);
      })
      .catch((error: Error) => log(`failed to repair desired state: ${error.message}`))
      .finally(() => (running = undefined));
  };
  pass();
  const timer = setInterval(pass, intervalMs);
  return () => clearInterval(timer);
}
