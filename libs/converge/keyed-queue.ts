/**
 * The one converge loop of the project: work is asked for by key (an endpoint, a parent), and
 * - the work of one key never runs twice at once;
 * - asking while it runs makes it run once more afterwards (however often one asked): no change is missed;
 * - at most `concurrency` keys run at a time, urgent ones (a change just seen) before background ones (the
 *   periodic full pass), and at most `backgroundConcurrency` of those: a full pass over everything never holds up
 *   an attach for longer than that many steps.
 * Each request resolves once a run of its key that started after the request has finished, failed or not:
 * the failure goes to `onError`, as the work's own outcome is recorded by the work itself. The work is told
 * whether anyone asked for its run urgently.
 */
export type Priority = "urgent" | "background";

export interface KeyedQueueOptions<K> {
  work: (key: K, priority: Priority) => Promise<void>;
  concurrency: number;
  /** Of `concurrency`, how many may be background work (default: all). */
  backgroundConcurrency?: number;
  onError: (key: K, error: Error) => void;
}

interface Deferred {
  promise: Promise<void>;
  resolve: () => void;
}

interface Waiting extends Deferred {
  priority: Priority;
}

export class KeyedWorkQueue<K> {
  /** Keys asked for and not started yet, each with the promise its askers wait on. */
  private readonly waiting = new Map<K, Waiting>();
  private readonly urgent = new Set<K>();
  private readonly background = new Set<K>();
  private readonly running = new Set<K>();
  private runningBackground = 0;
  private idle: Deferred | undefined;
  private stopped = false;

  constructor(private readonly options: KeyedQueueOptions<K>) {}

  request(key: K, priority: Priority = "urgent"): Promise<void> {
    if (this.stopped) return Promise.resolve();
    let waiting = this.waiting.get(key);
    if (!waiting) {
      waiting = { ...deferred(), priority };
      this.waiting.set(key, waiting);
    }
    if (priority === "urgent") {
      waiting.priority = "urgent";
      this.background.delete(key);
      this.urgent.add(key);
    } else if (!this.urgent.has(key)) {
      this.background.add(key);
    }
    this.pump();
    return waiting.promise;
  }

  /** Keys that run now or wait to. */
  get pending(): number {
    return this.waiting.size + this.running.size;
  }

  /** Resolves when nothing runs or waits; no new work starts after stop(). */
  async drained(): Promise<void> {
    if (this.pending === 0) return;
    this.idle ??= deferred();
    await this.idle.promise;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const waiting of this.waiting.values()) waiting.resolve();
    this.waiting.clear();
    this.urgent.clear();
    this.background.clear();
    await this.drained();
  }

  private pump(): void {
    while (this.running.size < this.options.concurrency) {
      const backgroundRoom = this.runningBackground < (this.options.backgroundConcurrency ?? this.options.concurrency);
      const key = this.next(this.urgent) ?? (backgroundRoom ? this.next(this.background) : undefined);
      if (key === undefined) break;
      this.start(key);
    }
    if (this.pending === 0 && this.idle) {
      this.idle.resolve();
      this.idle = undefined;
    }
  }

  /** The first key of `keys` that is not running: a running key's next run waits for this one to end. */
  private next(keys: Set<K>): K | undefined {
    for (const key of keys) {
      if (!this.running.has(key)) {
        keys.delete(key);
        return key;
      }
    }
    return undefined;
  }

  private start(key: K): void {
    const waiting = this.waiting.get(key)!;
    this.waiting.delete(key);
    this.running.add(key);
    const background = waiting.priority === "background";
    if (background) this.runningBackground++;
    void this.options
      .work(key, waiting.priority)
      .catch((error: Error) => this.options.onError(key, error))
      .finally(() => {
        this.running.delete(key);
        if (background) this.runningBackground--;
        waiting.resolve();
        this.pump();
      });
  }
}

function deferred(): Deferred {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
