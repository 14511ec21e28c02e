import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";
import type { SpanRecord } from "../../libs/telemetry/tracing.js";

const walkthrough = new URL("../../lab/walkthrough.sh", import.meta.url).pathname;

// One boot of the lab runs the whole walkthrough (the README's first command); each test reads what
// one step printed.
describe("lab walkthrough: ipvlan networks from intent to ping, across two hosts and an upstream", () => {
  const lab = bootLab(walkthrough, { hosts: 2, upstreams: 1 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("two containers on one host with -o parent=eth0 ping each other", () => {
    expect(section("run-ipv1")).toContain("exit 0");
    expect(section("ping-ipv1-from-ipv2")).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
  });

  it("creates eth0.20 as an 802.1Q sub-interface of eth0 on both hosts", () => {
    for (const host of ["h1", "h2"]) expect(section(`vlan-${host}`)).toMatch(/eth0\.20@eth0:.*UP[\s\S]*vlan protocol 802\.1Q id 20/);
  });

  it("containers on h1 and h2 on -o parent=eth0.20 ping each other", () => {
    expect(section("run-ivlan_test2")).toContain("exit 0");
    expect(section("ping-across-hosts")).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
  });

  it("gives the container a default route via the gateway", () => {
    const routes = section("route-ivlan_test1");
    expect(routes).toMatch(/^default via 192\.168\.20\.1 dev eth0/m);
    expect(routes).toMatch(/^192\.168\.20\.0\/24 dev eth0 proto kernel scope link src 192\.168\.20\.2/m);
  });

  it("keeps the container's link and addresses when the agent restarts", () => {
    expect(section("before-restart")).toMatch(/^\d+: eth0@/m);
    expect(section("before-restart")).toContain("192.168.20.2/24");
    expect(section("after-restart")).toBe(section("before-restart"));
  });

  it("refuses to remove a network that has containers, naming them", () => {
    expect(section("rm-busy-network")).toMatch(/Error: network ipvlan20 has active endpoints: ivlan_test1, ivlan_test2/);
    expect(section("rm-busy-network")).toContain("exit 1");
  });

  it("deletes eth0.20 on both hosts when the network is removed", () => {
    expect(section("rm-ipvlan20")).toContain("exit 0");
    expect(section("vlan-after-rm")).toMatch(/Device "eth0\.20" does not exist\.\nexit 1\n.*Device "eth0\.20" does not exist\.\nexit 1/);
  });

  it("runs the reference's VLAN 30 example across hosts", () => {
    expect(section("run-ivlan_test4")).toContain("exit 0");
    expect(section("ping-vlan30")).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
    expect(section("rm-ipvlan30")).not.toContain("exit 1");
  });

  it("uses an eth0.40 made by hand and deletes only the eth0.40 it made itself", () => {
    expect(section("create-ipvlan40-manual")).toContain("exit 0");
    expect(section("rm-ipvlan40-manual")).toContain("exit 0");
    expect(section("eth0.40-after-rm")).toMatch(/eth0\.40@eth0:.*\nexit 0\nDevice "eth0\.40" does not exist\.\nexit 1/);
  });

  it("never deletes a parent made by hand (foo)", () => {
    expect(section("run-ivlan_test5")).toContain("exit 0");
    expect(section("rm-ipvlan40")).not.toContain("exit 1");
    expect(section("foo-after-rm")).toMatch(/foo@eth0:.*UP.*\nexit 0/);
  });

  it("an L3 network: each host gets a route to the other's container via that host, and so does the upstream", () => {
    expect(section("run-web2")).toContain("exit 0");
    expect(section("l3-routes-h1")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.12 dev eth0/m);
    expect(section("l3-routes-h1")).not.toContain("via 192.168.1.11");
    expect(section("l3-routes-h2")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.11 dev eth0/m);
    expect(section("l3-routes-u1")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.11 dev eth0/m);
    expect(section("l3-routes-u1")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.12 dev eth0/m);
  });

  it("containers of the L3 network on h1 and h2 ping each other, and the upstream pings both", () => {
    for (const name of ["ping-l3-across-hosts", "ping-u1-web1", "ping-u1-web2"]) {
      expect(section(name), name).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
    }
  });

  it("a container pings another on the other host by name", () => {
    expect(section("ping-by-name")).toMatch(/^PING web2 \(10\.1\.[\d.]+\)/m);
    expect(section("ping-by-name")).toMatch(/1 packets transmitted, 1 received, 0% packet loss/);
  });

  it("withdraws h2's routes everywhere within the heartbeat window when its agent stops, and brings them back when it starts", () => {
    const stopped = section("h2-stopped");
    expect(Number(/withdrawn after (\d+) s/.exec(stopped)?.[1])).toBeLessThanOrEqual(15);
    expect(stopped).not.toContain("via 192.168.1.12");
    expect(stopped).toContain("via 192.168.1.11");
    expect(section("h2-started")).toMatch(/via 192\.168\.1\.12 dev eth0[\s\S]*via 192\.168\.1\.12 dev eth0/);
    expect(section("ping-after-h2-start")).toMatch(/2 packets transmitted, 2 received, 0% packet loss/);
    expect(section("rm-l3net")).not.toContain("exit 1");
  });

  it("refuses a VLAN id out of range with the reference's message and changes nothing", () => {
    expect(section("bad-vlan")).toContain("Error: vlan id must be between 1-4094, received: 5000");
    expect(section("bad-vlan")).toContain("exit 1");
    expect(section("ls-after-bad")).toBe(section("ls-before-bad"));
  });

  it("traces one trellis run from the CLI through planner and ipam down to each netlink call", () => {
    const spans = readFileSync(join(lab.outDir, "trace.jsonl"), "utf8")
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as SpanRecord);
    const run = spans.find((s) => s.name === "cli.run" && String(s.attributes["cli.args"]).includes("--name=ivlan_test2"));
    expect(run, "a cli.run span for ivlan_test2").toBeDefined();
    const trace = spans.filter((s) => s.traceId === run!.traceId);
    expect(new Set(trace.map((s) => s.service))).toEqual(new Set(["trellis-cli", "trellis-planner", "trellis-ipam", "trellis-agent"]));
    expect(trace.map((s) => s.name)).toEqual(expect.arrayContaining(["planner.endpoint.attach", "agent.endpoint.ensure", "netlink.link.create"]));
    const ids = new Set(trace.map((s) => s.spanId));
    expect(trace.filter((s) => s !== run).every((s) => s.parentSpanId && ids.has(s.parentSpanId))).toBe(true);
    expect(trace.some((s) => s.name === "netlink.link.create" && s.attributes["link.kind"] === "ipvlan")).toBe(true);
    expect(trace.some((s) => s.name === "netlink.link.rename" && s.attributes["link.name"] === "eth0")).toBe(true);
  });
});
