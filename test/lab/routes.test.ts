import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/routes.sh", import.meta.url).pathname;
const PINGED = /2 packets transmitted, 2 received, 0% packet loss/;

// One boot: three hosts and an upstream, an L3 network, and every route-distribution scenario in turn.
describe("lab: L3 route distribution across hosts and to an upstream", () => {
  const lab = bootLab(script, { hosts: 3, upstreams: 1 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("every other host and the upstream route each container's address via its host, with protocol 210", () => {
    // `ip route show proto 210` lists only routes of that protocol, and prints it no more.
    expect(section("routes-h1")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.12 dev eth0 *\n10\.1\.\S+ via 192\.168\.1\.13 dev eth0 *\n$/);
    expect(section("routes-u1").match(/ via 192\.168\.1\.1[123] dev eth0/g)).toHaveLength(3);
  });

  it("containers on different hosts ping each other, and the upstream pings every container", () => {
    for (const name of ["ping-c1-c2", "ping-c2-c3", "ping-c3-c1", "ping-u1-c1", "ping-u1-c2", "ping-u1-c3"]) expect(section(name)).toMatch(PINGED);
  });

  it("a dual-stack L3 network routes IPv6 blocks via each host's IPv6 underlay address, and containers ping over IPv6", () => {
    expect(section("create-l3v6")).toContain("exit 0");
    expect(section("routes6-h1")).toMatch(/^fd00:30::\S+ via fd00:1::12 dev eth0/m);
    expect(section("routes6-u1").match(/ via fd00:1::1[12] dev eth0/g)).toHaveLength(2);
    for (const name of ["ping6-d1-d2", "ping6-u1-d1"]) expect(section(name)).toMatch(PINGED);
  });

  it("a forged announcement changes nothing and is refused and logged", () => {
    expect(section("forge-diff").trim()).toBe("exit 0");
    expect(section("forge-refused")).toMatch(/refused announcement of 10\.1\.0\.0\/16 .* by host h2: IPAM has not given/);
  });

  it("restarting h3's agent leaves every other routing table byte-for-byte the same", () => {
    expect(section("restart-diff").trim()).toBe("exit 0");
  });

  it("a silent host's routes are withdrawn within the heartbeat window and restored when it returns", () => {
    const seconds = Number(/withdrawn after (\d+) s/.exec(section("h2-silent"))?.[1]);
    expect(seconds).toBeLessThanOrEqual(12);
    expect(section("h2-silent")).not.toContain("via 192.168.1.12");
    expect(section("ping-c1-c2-while-h2-silent")).not.toContain("exit 0");
    expect(section("h2-back")).toContain("via 192.168.1.12");
    expect(section("ping-c1-c2-after-h2-back")).toMatch(PINGED);
  });

  it("removing the last container of a host withdraws its route everywhere", () => {
    expect(section("rm-c1")).toContain("exit 0");
    // h1 still serves d1 of the dual-stack network (10.2.0.0/16): only l3net's route is gone.
    expect(section("after-rm-c1")).not.toMatch(/^10\.1\.\S+ via 192\.168\.1\.11 /m);
    expect(section("after-rm-c1")).toMatch(/^10\.2\.\S+ via 192\.168\.1\.11 /m);
  });
});
