import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/failover.sh", import.meta.url).pathname;

// "A failover is a delay, not an error": `trellis run` with a real agent, while its planner is down and
// comes back.
describe("lab: trellis run across a planner restart", () => {
  const lab = bootLab(script, { hosts: 1 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("pauses, saying why, and succeeds once the planner is back", () => {
    const run = section("run-during-restart");
    expect(run).toMatch(/^Note: failed to reach the planner at 127\.0\.0\.1:7720: connection refused; .*retrying for up to 120 s/m);
    expect(run).toMatch(/^c1\nexit 0\n/m);
    expect(Number(/took (\d+) s/.exec(run)?.[1])).toBeGreaterThanOrEqual(4);
  });

  it("made the container once: one row in trellis ps, one address held in IPAM, the one c1 has", () => {
    const rows = section("ps").split("\n").filter((line) => line.startsWith("c1 "));
    expect(rows).toHaveLength(1);
    const address = /10\.50\.0\.\d+\/24/.exec(rows[0]!)?.[0];
    expect(section("exec-c1")).toContain(`inet ${address}`);
    const held = section("ipam-holders").split("\n").filter((line) => /^10\.50\./.test(line));
    expect(held).toEqual([expect.stringMatching(new RegExp(`^${address!.replace(/\./g, "\\.")} h1 `))]);
  });

  it("removes it after", () => {
    expect(section("rm-c1")).toContain("exit 0");
  });
});
