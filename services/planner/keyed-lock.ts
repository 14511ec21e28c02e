/** The names a planner's work is locked by, in-process (KeyedLock) and in the intent consumer's ordering alike. */
export const lockKey = {
  network: (name: string) => `network:${name}`,
  parent: (name: string) => `parent:${name}`,
  container: (name: string) => `container:${name}`,
};

/**
 * Mutual exclusion per name within one process: intents on different containers and networks run at once,
 * two on the same name one after the other. (Across replicas, the stores' conditional writes decide.)
 */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<void>>();

  /** Runs `work` holding every key; keys are taken in sorted order, so two callers never wait on each other. */
  async run<T>(keys: string[], work: () => Promise<T>): Promise<T> {
    const releases: (() => void)[] = [];
    try {
      for (const key of [...new Set(keys)].sort()) releases.push(await this.acquire(key));
      return await work();
    } finally {
      releases.forEach((release) => release());
    }
  }

  private async acquire(key: string): Promise<() => void> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const tail = previous.then(() => held);
    this.tails.set(key, tail);
    await previous;
    return () => {
      release();
      if (this.tails.get(key) === tail) this.tails.delete(key);
    };
  }
}
