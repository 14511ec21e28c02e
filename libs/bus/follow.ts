import { KvWatchInclude, type KV, type KvWatchEntry } from "@nats-io/kv";
import { BusUnavailableError } from "./errors.js";

/** A watch that ended (the server restarted) is opened again after this long. */
const REOPEN_DELAY_MS = 500;
const CATCH_UP_TIMEOUT_MS = 5_000;

export interface FollowOptions {
  /** The keys to follow, as a subject filter (one: nats-server 2.9 takes no more); every key by default. */
  filter?: string;
  /** Named in the log line of a value that fails to decode or apply. */
  bucketName: string;
  /** Applies one entry to the follower's state. A throw is logged once per key and the entry ignored. */
  onEntry(entry: KvWatchEntry): void;
  log?(line: string): void;
}

/**
 * A KV bucket (or the keys of one filter) followed into memory: what every Trellis view is fed by. It resolves
 * once the values stored at the start have been applied, so that a first decision sees the whole stored state
 * (acting on half of it would delete what is right); afterwards it applies changes as they come. A value that
 * cannot be read (garbage a peer stored) is logged once and ignored, so that no value takes a service down.
 */
export class FollowedBucket {
  private watchedRevision = 0;
  private stopped = false;
  private stopWatch: (() => void) | undefined;
  private readonly waiters = new Set<{ revision: number; resolve: () => void }>();
  private readonly reported = new Set<string>();

  private constructor(
    private readonly kv: KV,
    private readonly options: FollowOptions,
  ) {}

  static async start(kv: KV, options: FollowOptions): Promise<FollowedBucket> {
    const follower = new FollowedBucket(kv, options);
    await follower.open(true);
    return follower;
  }

  stop(): void {
    this.stopped = true;
    this.stopWatch?.();
  }

  /**
   * Waits until every write the bucket had when called has been applied: what a view needs before it trusts
   * its own silence (no such container) over a watch that may lag. Only for a follower of every key: a
   * filtered watch never sees the revisions of the other keys.
   */
  async catchUp(timeoutMs = CATCH_UP_TIMEOUT_MS): Promise<void> {
    const revision = (await this.kv.status()).streamInfo.state.last_seq;
    if (this.watchedRevision >= revision) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new BusUnavailableError(`the view of ${this.options.bucketName} is behind (at revision ${this.watchedRevision} of ${revision})`));
      }, timeoutMs);
      const waiter = {
        revision,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.waiters.add(waiter);
    });
  }

  /**
   * Opens the watch; `first`: resolves once the stored values are in, else from where the last watch ended.
   * A first watch delivers every stored message, not the last of each key (a watch's default): nats-server
   * before 2.9.15 recounts a last-per-key consumer's pending messages, walking every key its filter matches,
   * on each message it delivers for as long as that count has been zero at every delivery, which is the case
   * of a follower opened on an empty bucket and kept caught up (every follower of a new cluster). With the
   * watches of the endpoints bucket that was 71% of the server's CPU at 5,000 to 7,500 containers, growing
   * with every key (issue 9). A bucket keeps one message per key (history 1, openBucket), so the entries are
   * the same; with more history, older values come first and the newer ones replace them.
   */
  private async open(first: boolean): Promise<void> {
    const watch = await this.kv.watch({
      key: this.options.filter ?? ">",
      ...(first || this.watchedRevision === 0 ? { include: KvWatchInclude.AllHistory } : { resumeFromRevision: this.watchedRevision + 1 }),
    });
    this.stopWatch = () => watch.stop();
    const stored = await storedCount(watch);
    let applied = 0;
    let markLoaded!: () => void;
    const loaded = new Promise<void>((resolve) => (markLoaded = resolve));
    if (stored === 0) markLoaded();
    void (async () => {
      try {
        for await (const entry of watch) {
          this.apply(entry);
          if (++applied === stored) markLoaded();
        }
      } catch {
        // The watch failed (server unreachable): the state only lags; it is opened again below.
      }
      markLoaded();
      if (!this.stopped) setTimeout(() => void this.reopen(), REOPEN_DELAY_MS);
    })();
    await loaded;
  }

  private async reopen(): Promise<void> {
    while (!this.stopped) {
      try {
        await this.open(false);
        return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, REOPEN_DELAY_MS));
      }
    }
  }

  private apply(entry: KvWatchEntry): void {
    try {
      this.options.onEntry(entry);
      this.reported.delete(entry.key);
    } catch (error) {
      if (!this.reported.has(entry.key)) {
        this.reported.add(entry.key);
        (this.options.log ?? console.error)(`ignored key ${entry.key} of ${this.options.bucketName}: ${(error as Error).message}`);
      }
    }
    if (entry.revision > this.watchedRevision) this.watchedRevision = entry.revision;
    for (const waiter of this.waiters) {
      if (waiter.revision > this.watchedRevision) continue;
      this.waiters.delete(waiter);
      waiter.resolve();
    }
  }
}

/**
 * How many stored values a new watch delivers before live changes. nats.js knows (the pending count of the
 * watch's consumer at its creation) but keeps the consumer on the iterator's `_data`; the watch's own marker,
 * `isUpdate`, comes only with the last stored value, and never for a filter that matches nothing.
 */
async function storedCount(watch: AsyncIterable<KvWatchEntry>): Promise<number> {
  const consumer = (watch as { _data?: { info(cached: boolean): Promise<{ num_pending: number }> } })._data;
  if (!consumer) throw new Error("failed to watch a bucket: this nats.js keeps no consumer on its watch iterator");
  return (await consumer.info(true)).num_pending;
}
