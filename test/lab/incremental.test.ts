import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bootLab, type LabResult } from "../support/lab.js";
import type { SpanRecord } from "../../libs/telemetry/tracing.js";

const script = new URL("../../lab/incremental.sh", import.meta.url).pathname;
const REPAIRED = /^back after (\d+) ms$/gm;

/**
 * The agent's spans: its steps (a step a change asked for is one span naming its namespace; one that converges an
 * intent the first time has a span for each netlink call under it) with the namespace each touched.
 */
function agentSpans(lab: LabResult): SpanRecord[] {
  return readFileSync(join(lab.outDir, "trace.jsonl"), "utf8")
    .trim()
    .split("\n")
    .map((line) => JSON.parse(line) as SpanRecord)
    .filter((span) => span.service === "trellis-agent");
}

/** The namespaces a call touched: its socket's, and the one a link is created in. */
function namespacesOf(span: SpanRecord): string[] {
  return [span.attributes.netns ?? "host", span.attributes.target_netns].filter((netns) => netns !== undefined).map(String);
}

/** Every "back after N ms" of a section, in order. */
function repairTimes(text: string): number[] {
  return [...text.matchAll(REPAIRED)].map((match) => Number(match[1]));
}

// One boot, one host: a change to one container touches no other, and the kernel's link notifications repair a
// container's eth0 or a parent deleted by hand well before the agent's 15 s full pass would.
describe("lab: one change converges one container, and links deleted by hand come back at once", () => {
  const lab = bootLab(script, { hosts: 1 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("adding c4 and removing c3 leaves the links (same ifindex), addresses and routes of c1 and c2 as they were", () => {
    expect(section("run-c4")).toContain("exit 0");
    expect(section("rm-c3")).toContain("exit 0");
    expect(section("others-unchanged").trim()).toBe("exit 0");
    expect(section("c4-ready")).toMatch(/inet 10\.40\.0\.\d+\/24 .*\nexit 0/);
    expect(section("c3-gone")).not.toContain("exit 0");
  });

  it("meanwhile the agent ran steps, and so made netlink calls, in c4's and c3's namespaces only, none in c1's or c2's", () => {
    const [start, end] = section("window").trim().split(" ").map(Number);
    const inWindow = agentSpans(lab).filter((span) => span.startMicros >= start! && span.startMicros <= end!);
    const namespaces = new Set(inWindow.flatMap(namespacesOf));
    expect(inWindow.some((span) => span.name.startsWith("netlink.") && namespacesOf(span).includes("c4@h1")), [...namespaces].join(", ")).toBe(true);
    expect(namespaces.has("c1@h1") || namespaces.has("c2@h1"), [...namespaces].join(", ")).toBe(false);
  });

  it("meanwhile the kernel saw no link, address or route change in c1's and c2's namespaces", () => {
    expect(section("others-monitor").trim()).toBe("end of monitor");
  });

  it("a container's eth0 deleted by hand is back, with its address, within a second, and nothing else changed", () => {
    const [took] = repairTimes(section("eth0-repair"));
    expect(took, section("eth0-repair")).toBeLessThan(1000);
    expect(section("eth0-repair-others").trim()).toBe("exit 0");
    // The repair is a step of its own, traced: what the window above would have shown for c1 had it run.
    const repairs = agentSpans(lab).filter((span) => span.name === "agent.endpoint.ensure" && span.attributes.netns === "c1@h1");
    expect(repairs.length, "c1's step at its attach, after its eth0's deletion, and after its parent's").toBeGreaterThanOrEqual(3);
  });

  it("a parent deleted by hand is made again, and every container's eth0 on it is back within a second", () => {
    const times = repairTimes(section("parent-repair"));
    expect(times, section("parent-repair")).toHaveLength(2);
    for (const took of times) expect(took).toBeLessThan(1000);
    expect(section("parent-repair")).toContain("vlan protocol 802.1Q id 40");
    expect(section("ping-after-repair")).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
  });
});
