/** A name an intent touches, and whether it changes the thing (exclusive) or only uses it (shared). */
export interface IntentKey {
  key: string;
  exclusive: boolean;
}

/**
 * Runs intents taken in stream order as soon as no earlier one still running touches what they touch, so that
 * intents on different networks and containers run at once while a controller's "create, then attach" on one
 * network still happens in that order. An intent that changes a thing waits for every earlier one on it; one that
 * only uses it (attaches on one network) waits for the earlier changes only, and runs beside the others.
 */
export class IntentOrder {
  /** Per key: the last exclusive run, the shared runs since it, and how many runs on it have not finished. */
  private readonly keys = new Map<string, { exclusive: Promise<void>; shared: Set<Promise<void>>; unfinished: number }>();

  run<T>(touches: IntentKey[], work: () => Promise<T>): Promise<T> {
    const before: Promise<void>[] = [];
    for (const { key, exclusive } of touches) {
      const state = this.keys.get(key);
      if (!state) continue;
      before.push(state.exclusive);
      if (exclusive) before.push(...state.shared);
    }
    const result = Promise.all(before).then(work);
    const done = result.then(
      () => undefined,
      () => undefined,
    );
    for (const { key, exclusive } of touches) {
      let state = this.keys.get(key);
      if (!state) this.keys.set(key, (state = { exclusive: Promise.resolve(), shared: new Set(), unfinished: 0 }));
      state.unfinished++;
      if (exclusive) {
        state.exclusive = done;
        state.shared.clear();
      } else {
        state.shared.add(done);
      }
    }
    void done.then(() => this.forget(touches, done));
    return result;
  }

  /** A key whose runs have all finished is dropped, so the map holds only what is in flight. */
  private forget(touches: IntentKey[], done: Promise<void>): void {
    for (const { key } of touches) {
      const state = this.keys.get(key);
      if (!state) continue;
      state.shared.delete(done);
      if (--state.unfinished === 0) this.keys.delete(key);
    }
  }
}
