import { describe, expect, it } from "vitest";
import { KeyedWorkQueue } from "../../libs/converge/keyed-queue.js";

/** A queue whose work on each key waits until the test lets it finish, recording what ran. */
function gatedQueue(concurrency: number, backgroundConcurrency?: number) {
  const started: string[] = [];
  const priorities: string[] = [];
  const gates = new Map<string, () => void>();
  let running = 0;
  let mostAtOnce = 0;
  const queue = new KeyedWorkQueue<string>({
    concurrency,
    backgroundConcurrency,
    onError: () => undefined,
    work: (key, priority) =>
      new Promise<void>((resolve) => {
        started.push(key);
        priorities.push(priority);
        running++;
        mostAtOnce = Math.max(mostAtOnce, running);
        gates.set(key, () => {
          running--;
          resolve();
        });
      }),
  });
  const finish = async (key: string) => {
    const gate = gates.get(key);
    if (!gate) throw new Error(`${key} is not running; started: ${started.join(",")}`);
    gates.delete(key);
    gate();
    await new Promise((resolve) => setImmediate(resolve));
  };
  return { queue, started, priorities, finish, mostAtOnce: () => mostAtOnce };
}

describe("the keyed work queue", () => {
  it("never runs one key twice at once, and runs it once more for any number of requests made meanwhile", async () => {
    const { queue, started, finish } = gatedQueue(4);
    const first = queue.request("a");
    const later = [queue.request("a"), queue.request("a"), queue.request("a")];
    expect(started).toEqual(["a"]);
    await finish("a");
    await first;
    expect(started).toEqual(["a", "a"]);
    await finish("a");
    await Promise.all(later);
    expect(started).toEqual(["a", "a"]);
    expect(queue.pending).toBe(0);
  });

  it("runs different keys side by side up to its concurrency, urgent ones before background ones", async () => {
    const { queue, started, priorities, finish, mostAtOnce } = gatedQueue(2);
    const background = ["b1", "b2", "b3", "b4"].map((key) => queue.request(key, "background"));
    const urgent = queue.request("u1");
    expect(started).toEqual(["b1", "b2"]);
    await finish("b1");
    expect(started).toEqual(["b1", "b2", "u1"]);
    for (const key of ["u1", "b2", "b3", "b4"]) await finish(key);
    await Promise.all([...background, urgent]);
    expect(started).toEqual(["b1", "b2", "u1", "b3", "b4"]);
    expect(priorities).toEqual(["background", "background", "urgent", "background", "background"]);
    expect(mostAtOnce()).toBe(2);
  });

  it("a background request for a key already asked for urgently keeps it urgent, and an urgent one makes it so", async () => {
    const { queue, started, priorities, finish } = gatedQueue(1);
    const blocker = queue.request("x");
    const requests = [queue.request("a", "background"), queue.request("b"), queue.request("b", "background"), queue.request("a")];
    for (const key of ["x", "b", "a"]) await finish(key);
    await Promise.all([blocker, ...requests]);
    expect(started).toEqual(["x", "b", "a"]);
    expect(priorities).toEqual(["urgent", "urgent", "urgent"]);
  });

  it("runs no more background keys at once than its background concurrency, leaving the rest to urgent ones", async () => {
    const { queue, started, finish } = gatedQueue(3, 1);
    const background = ["b1", "b2"].map((key) => queue.request(key, "background"));
    const urgent = ["u1", "u2"].map((key) => queue.request(key));
    expect(started).toEqual(["b1", "u1", "u2"]);
    for (const key of ["b1", "u1", "u2", "b2"]) await finish(key);
    await Promise.all([...background, ...urgent]);
    expect(started).toEqual(["b1", "u1", "u2", "b2"]);
  });

  it("a failed run goes to onError and still answers its requests", async () => {
    const errors: string[] = [];
    const queue = new KeyedWorkQueue<string>({ concurrency: 1, onError: (key, error) => errors.push(`${key}: ${error.message}`), work: () => Promise.reject(new Error("boom")) });
    await queue.request("x");
    expect(errors).toEqual(["x: boom"]);
  });
});
