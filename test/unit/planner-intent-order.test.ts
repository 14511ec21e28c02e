import { describe, expect, it } from "vitest";
import { IntentOrder, type IntentKey } from "../../services/planner/intent-order.js";

/** A piece of work that logs its start and ends when told. */
function gate(log: string[], name: string) {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return {
    work: async () => {
      log.push(`start ${name}`);
      await opened;
      log.push(`end ${name}`);
    },
    open,
  };
}

const changes = (key: string): IntentKey => ({ key, exclusive: true });
const uses = (key: string): IntentKey => ({ key, exclusive: false });
const tick = () => new Promise((resolve) => setImmediate(resolve));

describe("the order in which intents of the stream run", () => {
  it("runs an attach after the create of its network, two attaches on it side by side, and the delete after both", async () => {
    const order = new IntentOrder();
    const log: string[] = [];
    const [create, a1, a2, del] = ["create", "a1", "a2", "delete"].map((name) => gate(log, name));
    const runs = [
      order.run([changes("network:x")], create!.work),
      order.run([uses("network:x"), changes("container:a1")], a1!.work),
      order.run([uses("network:x"), changes("container:a2")], a2!.work),
      order.run([changes("network:x")], del!.work),
    ];
    await tick();
    expect(log).toEqual(["start create"]);
    create!.open();
    await tick();
    expect(log).toEqual(["start create", "end create", "start a1", "start a2"]);
    a1!.open();
    await tick();
    expect(log).not.toContain("start delete");
    a2!.open();
    await tick();
    del!.open();
    await Promise.all(runs);
    expect(log.slice(-2)).toEqual(["start delete", "end delete"]);
  });

  it("runs intents on different networks and containers at once, and one that fails does not hold up the next", async () => {
    const order = new IntentOrder();
    const log: string[] = [];
    const x = gate(log, "x");
    const failing = order.run([changes("network:y")], async () => {
      throw new Error("refused");
    });
    const afterFailure = order.run([uses("network:y"), changes("container:c")], async () => void log.push("attach on y"));
    const onX = order.run([changes("network:x")], x.work);
    await expect(failing).rejects.toThrow("refused");
    await afterFailure;
    expect(log).toEqual(["start x", "attach on y"]);
    x.open();
    await onX;
  });
});
