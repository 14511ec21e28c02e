import { describe, expect, it } from "vitest";
import { ROUTER_HOLD_SECONDS } from "../../services/lab/routers.js";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/bgp.sh", import.meta.url).pathname;
const PINGED = /2 packets transmitted, 2 received, 0% packet loss/;
/** Under emulation each look at r1's table costs a second or more (several on a busy machine). */
const POLL_SLACK_SECONDS = 8;
/** BIRD prints "since" from its monotonic clock: one instant may come out a millisecond apart. */
const SINCE_JITTER_MS = 50;

/** `h1_v4 up 10:12:02.095 Established` lines: each established session and when it came up, in ms of the day. */
function sessionsUpSince(text: string): Map<string, number> {
  const sessions = new Map<string, number>();
  for (const [, name, h, m, s] of text.matchAll(/^(\S+) up (\d+):(\d+):([\d.]+) Established$/gm)) {
    sessions.set(name!, (Number(h) * 3600 + Number(m) * 60 + Number(s)) * 1000);
  }
  return sessions;
}

// One boot: two hosts whose agents peer over BGP with r1, a plain BIRD router, and a client behind r1.
describe("lab: routers learn container subnets over BGP", () => {
  const lab = bootLab(script, { hosts: 2, routers: 1 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("r1's kernel has each host's blocks via that host, IPv4 via its IPv4 address and IPv6 via its IPv6 one", () => {
    const routes = section("r1-routes");
    // Blocks are /26 and /122 by default: one of each per host, and nothing else.
    expect(routes).toMatch(/^10\.1\.\d+\.\d+\/26 via 192\.168\.1\.11 dev eth0 /m);
    expect(routes).toMatch(/^10\.1\.\d+\.\d+\/26 via 192\.168\.1\.12 dev eth0 /m);
    expect(routes).toMatch(/^fd00:30::[0-9a-f:]*\/122 via fd00:1::11 dev eth0 /m);
    expect(routes).toMatch(/^fd00:30::[0-9a-f:]*\/122 via fd00:1::12 dev eth0 /m);
    expect(routes.trim().split("\n")).toHaveLength(4);
    expect(section("r1-sessions").match(/^h[12]_v[46] up \S+ Established$/gm)).toHaveLength(4);
  });

  it("the client behind r1 pings containers on both hosts, over IPv4 and IPv6", () => {
    expect(section("client-routes")).toMatch(/^default via 192\.168\.2\.1 dev eth0/m);
    expect(section("client-routes")).not.toMatch(/10\.1\.|fd00:30:/);
    for (const name of ["ping-client-c1", "ping-client-c2", "ping6-client-c1", "ping6-client-c2"]) expect(section(name)).toMatch(PINGED);
  });

  it("a forged announcement is never advertised: r1's table is unchanged and h2's BIRD has no such route", () => {
    expect(section("forge")).toContain("exit 0");
    expect(section("forge-diff").trim()).toBe("exit 0");
    expect(section("forge-h2-bird").trim()).toBe("0");
  });

  it("restarting h2's agent changes nothing at r1: same routes, same sessions, same BIRD", () => {
    expect(section("restart-diff").trim()).toBe("exit 0");
    const [before, after] = section("restart-sessions").split("after:").map(sessionsUpSince);
    expect([...after!.keys()]).toEqual([...before!.keys()]);
    expect(before!.size).toBe(4);
    for (const [name, since] of before!) expect(Math.abs(after!.get(name)! - since), name).toBeLessThan(SINCE_JITTER_MS);
    expect(section("restart-bird-pid")).toMatch(/^same BIRD \(pid \d+\)$/m);
  });

  it("removing the last container of h1's blocks withdraws them at r1, and h2's stay", () => {
    expect(section("rm-c1")).toContain("exit 0");
    const routes = section("after-rm-c1");
    expect(routes).not.toMatch(/via (192\.168\.1\.11|fd00:1::11) /);
    expect(routes).toMatch(/ via 192\.168\.1\.12 /);
    expect(routes).toMatch(/ via fd00:1::12 /);
  });

  it("a host whose BIRD stops answering, as a dead one's, is withdrawn at r1 within the hold time", () => {
    // The last keepalive (every hold/3 s) came at most that long before the stop, so the timer runs out between
    // hold - hold/3 and hold; under emulation the two clocks compared drift by a second, so the lower bound only
    // tells the hold timer from a session that went down at the stop.
    const expired = Number(/hold timer for h2_v4 expired ([\d.]+) s after the stop/.exec(section("h2-dead"))?.[1]);
    expect(expired).toBeGreaterThanOrEqual(ROUTER_HOLD_SECONDS / 3);
    expect(expired).toBeLessThanOrEqual(ROUTER_HOLD_SECONDS + 0.5);
    // Seen gone from r1's kernel by the script's looks at it, which take seconds each under emulation.
    expect(Number(/withdrawn after (\d+) s/.exec(section("h2-dead"))?.[1])).toBeLessThanOrEqual(ROUTER_HOLD_SECONDS + POLL_SLACK_SECONDS);
    expect(section("h2-dead")).not.toMatch(/via (192\.168\.1\.12|fd00:1::12) /);
    expect(section("ping-client-c2-while-dead")).not.toContain("exit 0");
  });

  it("the agent starts a new BIRD for a dead one, and r1 learns the host's blocks again", () => {
    expect(section("h2-back")).toMatch(/ via 192\.168\.1\.12 /);
    expect(section("h2-back")).toMatch(/ via fd00:1::12 /);
    expect(section("ping-client-c2-after-back")).toMatch(PINGED);
  });
});
