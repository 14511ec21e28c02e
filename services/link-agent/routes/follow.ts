import type { KV, KvWatchEntry } from "@nats-io/kv";

/**
 * Watches every key of a bucket and resolves once the values stored at the start have been delivered,
 * so that a first pass sees the whole stored state: acting on half of it would delete routes that are
 * right (a flap on restart). Returns the function that stops the watch.
 */
export async function followBucket(bucket: KV, onEntry: (entry: KvWatchEntry) => void): Promise<() => void> {
  // The watch marks the last stored value as the first "update"; an empty bucket delivers none at all.
  const empty = (await bucket.status()).values === 0;
  const watch = await bucket.watch();
  let markLoaded!: () => void;
  const loaded = new Promise<void>((resolve) => (markLoaded = resolve));
  if (empty) markLoaded();
  void (async () => {
    for await (const entry of watch) {
      onEntry(entry);
      if (entry.isUpdate) markLoaded();
    }
  })();
  await loaded;
  return () => watch.stop();
}
