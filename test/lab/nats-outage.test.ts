import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/nats-outage.sh", import.meta.url).pathname;

// "The dataplane outlives the control plane": NATS frozen for 20 s (twice the heartbeat window), then killed and
// started again, while containers on two hosts ping each other over an L3 and an L2 network.
describe("lab: containers keep talking while NATS is frozen, killed and started again", () => {
  const lab = bootLab(script, { hosts: 2 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
    expect(section("freeze")).toMatch(/frozen\n.*killed after 20 s\nnats-server started again\nthe planner answers again/);
  });

  it("loses no ping between containers on h1 and h2, over L3 and over L2", () => {
    expect(section("ping-l3")).toMatch(/225 packets transmitted, 225 received, 0% packet loss/);
    expect(section("ping-l2")).toMatch(/225 packets transmitted, 225 received, 0% packet loss/);
  });

  it("changes no route on any host", () => {
    expect(section("tables-diff")).toBe("exit 0\n");
    expect(section("route-changes-h1")).toBe("");
    expect(section("route-changes-h2")).toBe("");
    expect(section("withdrawals").trim()).toBe("");
  });

  it("each agent knew it was cut off, and when contact came back", () => {
    for (const host of ["h1", "h2"]) expect(section("agents-on-contact")).toMatch(new RegExp(`^${host} lost [1-9]\\d* back [1-9]`, "m"));
  });

  it("still lists every container, and a new one works", () => {
    for (const name of ["c1", "c2", "v1", "v2"]) expect(section("ps")).toMatch(new RegExp(`^${name} `, "m"));
    expect(section("run-c3")).toContain("exit 0");
    expect(section("ping-c3")).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
  });
});
