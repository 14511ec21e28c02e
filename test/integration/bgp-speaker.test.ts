import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createNamespace, deleteNamespace } from "../../libs/netlink/index.js";
import { birdCommand } from "../../services/link-agent/bgp/bird-control.js";
import { parseBgpOptions } from "../../services/link-agent/bgp/options.js";
import { BirdSpeaker, stopLeftoverSpeaker } from "../../services/link-agent/bgp/speaker.js";

// A host's BIRD, run by the agent's speaker, and a router's BIRD (plain, no Trellis), each in a namespace of
// this machine's kernel made here, joined by a veth: real BGP sessions over IPv4 and IPv6, and the router's
// kernel shows what the host advertises. (The lab's bgp test does the same with real containers.)

const suffix = randomBytes(3).toString("hex");
const HOST_NS = `tbgp-h-${suffix}`;
const ROUTER_NS = `tbgp-r-${suffix}`;
const HOST = { v4: "192.168.78.12", v6: "fd78::12" };
const ROUTER = { v4: "192.168.78.1", v6: "fd78::1" };
const HOLD_SECONDS = 3;
const BLOCK = "10.1.0.64/26";
const HOST_ROUTE = "10.1.0.200/32";
const BLOCK6 = "fd00:30::40/122";

let work: string;
let birdInHost: string;
const routerFiles = { config: "", socket: "", pidFile: "" };

function ip(netns: string, ...args: string[]): string {
  return execFileSync("ip", ["-n", netns, ...args], { encoding: "utf8" });
}

/** The routes the router's BIRD put in its kernel (`proto bird`, which `ip` then leaves out of each line). */
function routerRoutes(): string {
  return ip(ROUTER_NS, "route", "show", "proto", "bird") + ip(ROUTER_NS, "-6", "route", "show", "proto", "bird");
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting for ${what}; the router has:\n${routerRoutes()}`);
    await sleep(100);
  }
  return Date.now() - started;
}

/** When each of the router's sessions came up, as `show protocols` prints it: unchanged while a session stays up. */
async function sessionsSince(): Promise<string[]> {
  const { lines } = await birdCommand(routerFiles.socket, "show protocols");
  return lines.filter((line) => / BGP /.test(line)).map((line) => line.split(/\s+/).slice(0, 6).join(" "));
}

/** BIRD prints "since" from its monotonic clock: one instant may come out a millisecond apart. */
function expectSameSessions(after: string[], before: string[]): void {
  const parse = (line: string) => {
    const [name, , , state, since] = line.split(" ");
    const [h, m, s] = since!.split(":").map(Number);
    return { name, state, ms: (h! * 3600 + m! * 60 + s!) * 1000 };
  };
  expect(after.map((line) => [parse(line).name, parse(line).state])).toEqual(before.map((line) => [parse(line).name, parse(line).state]));
  after.forEach((line, i) => expect(Math.abs(parse(line).ms - parse(before[i]!).ms)).toBeLessThan(50));
}

async function established(): Promise<number> {
  return (await sessionsSince()).filter((line) => line.endsWith("Established")).length;
}

function speaker(): BirdSpeaker {
  const bgp = parseBgpOptions("64512", [`${ROUTER.v4}:64500`, `[${ROUTER.v6}]:64500`], [HOST.v4, HOST.v6])!;
  return new BirdSpeaker({ host: "h2", bgp, addresses: [HOST.v4, HOST.v6], runDir: work, birdBinary: birdInHost });
}

function killBird(pid: number | undefined, signal: NodeJS.Signals = "SIGTERM"): void {
  if (pid === undefined) return;
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "trellis-bgp-"));
  for (const netns of [HOST_NS, ROUTER_NS]) await createNamespace(netns);
  ip(HOST_NS, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", ROUTER_NS);
  for (const [netns, addresses] of [[HOST_NS, HOST], [ROUTER_NS, ROUTER]] as const) {
    ip(netns, "addr", "add", `${addresses.v4}/24`, "dev", "eth0");
    ip(netns, "addr", "add", `${addresses.v6}/64`, "dev", "eth0", "nodad");
    ip(netns, "link", "set", "eth0", "up");
    ip(netns, "link", "set", "lo", "up");
  }
  // The speaker runs `bird` where the agent runs; here that is the host's namespace.
  birdInHost = join(work, "bird-in-host");
  writeFileSync(birdInHost, `#!/bin/sh\nexec nsenter --net=/run/netns/${HOST_NS} bird "$@"\n`);
  chmodSync(birdInHost, 0o755);
  Object.assign(routerFiles, { config: join(work, "router.conf"), socket: join(work, "router.ctl"), pidFile: join(work, "router.pid") });
  writeFileSync(
    routerFiles.config,
    [
      `router id ${ROUTER.v4};`,
      "protocol device {}",
      "protocol kernel { ipv4 { import none; export all; }; }",
      "protocol kernel { ipv6 { import none; export all; }; }",
      `template bgp host { hold time ${HOLD_SECONDS}; keepalive time 1; error wait time 1, 5; connect retry time 2; }`,
      `protocol bgp h2_v4 from host { local ${ROUTER.v4} as 64500; neighbor ${HOST.v4} as 64512; ipv4 { import all; export none; }; }`,
      `protocol bgp h2_v6 from host { local ${ROUTER.v6} as 64500; neighbor ${HOST.v6} as 64512; ipv6 { import all; export none; }; }`,
      "",
    ].join("\n"),
  );
  execFileSync("nsenter", [`--net=/run/netns/${ROUTER_NS}`, "bird", "-c", routerFiles.config, "-s", routerFiles.socket, "-P", routerFiles.pidFile]);
});

afterAll(async () => {
  killBird(speaker().runningPid());
  killBird(Number(readFileSync(routerFiles.pidFile, "utf8")));
  await sleep(300);
  for (const netns of [HOST_NS, ROUTER_NS]) await deleteNamespace(netns).catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
});

describe("a host's BGP speaker (BIRD) and a router", () => {
  it("starts BIRD, which advertises each prefix via the host's underlay address of its family", async () => {
    await speaker().advertise([BLOCK, HOST_ROUTE, BLOCK6]);
    await waitFor("the three prefixes at the router", () => routerRoutes().split("\n").filter(Boolean).length === 3);
    expect(routerRoutes()).toBe(
      [
        `${BLOCK} via ${HOST.v4} dev eth0 metric 32 `,
        `${HOST_ROUTE.replace("/32", "")} via ${HOST.v4} dev eth0 metric 32 `,
        `${BLOCK6} via ${HOST.v6} dev eth0 metric 32 pref medium`,
        "",
      ].join("\n"),
    );
    // BIRD never programs the host's kernel: it has no kernel protocol there.
    expect(ip(HOST_NS, "route", "show", "table", "all", "proto", "bird")).toBe("");
  });

  it("withdraws a prefix the host no longer serves with a reload that keeps the sessions up", async () => {
    const since = await sessionsSince();
    const pid = speaker().runningPid();
    await speaker().advertise([BLOCK, BLOCK6]);
    await waitFor("the host route withdrawn", () => !routerRoutes().includes(HOST_ROUTE.replace("/32", " ")));
    expect(routerRoutes()).toContain(`${BLOCK} via ${HOST.v4}`);
    expectSameSessions(await sessionsSince(), since);
    expect(speaker().runningPid()).toBe(pid);
  });

  it("a restarted agent serving the same prefixes writes nothing and reloads nothing", async () => {
    const restarted = speaker();
    const config = statSync(restarted.files.config).mtimeMs;
    const status = async () => (await birdCommand(restarted.files.socket, "show status")).lines.find((line) => line.startsWith("Last reconfiguration"));
    const reconfigured = await status();
    const before = routerRoutes();
    await restarted.advertise([BLOCK6, BLOCK]);
    expect(statSync(restarted.files.config).mtimeMs).toBe(config);
    expect(await status()).toBe(reconfigured);
    await sleep(1000);
    expect(routerRoutes()).toBe(before);
  });

  it("a BIRD killed outright leaves its routes at the router, as stale, until the next pass starts a new one", async () => {
    const before = routerRoutes();
    const pid = speaker().runningPid()!;
    process.kill(pid, "SIGKILL");
    await waitFor("the router to see both sessions closed", async () => (await established()) === 0, 5000);
    await sleep(HOLD_SECONDS * 1000);
    expect(routerRoutes()).toBe(before);
    await speaker().advertise([BLOCK, BLOCK6]);
    expect(speaker().runningPid()).not.toBe(pid);
    await waitFor("both sessions up again", async () => (await established()) === 2);
    await sleep(1000);
    expect(routerRoutes()).toBe(before);
  });

  it("a host speaker that stops answering, as a dead host's, is withdrawn at the router within the hold time", async () => {
    const pid = speaker().runningPid()!;
    process.kill(pid, "SIGSTOP");
    try {
      // The hold timer, not a goodbye: the speaker is stopped and sends nothing. The bound leaves room for a loaded
      // machine (a CI run saw 5.8 s with a 3 s hold) while still telling it from routes that never go.
      const took = await waitFor("the dead host's routes withdrawn", () => routerRoutes() === "", (HOLD_SECONDS * 3 + 3) * 1000);
      expect(took).toBeLessThanOrEqual(HOLD_SECONDS * 3 * 1000);
      // Still running (stopped), so the speaker does not start a second BIRD next to it.
      expect(speaker().runningPid()).toBe(pid);
    } finally {
      process.kill(pid, "SIGKILL");
    }
  });

  it("the next pass after BIRD died starts a new one, and the router learns the routes again", async () => {
    await waitFor("the old BIRD gone", () => speaker().runningPid() === undefined, 5000);
    await speaker().advertise([BLOCK, BLOCK6]);
    await waitFor("both prefixes back at the router", () => routerRoutes().split("\n").filter(Boolean).length === 2);
    expect(routerRoutes()).toContain(`${BLOCK6} via ${HOST.v6}`);
  });

  it("an agent started without BGP shuts down the BIRD an earlier one left, and the router withdraws its routes", async () => {
    await stopLeftoverSpeaker("h2", work);
    await waitFor("the routes withdrawn", () => routerRoutes() === "", 5000);
    await waitFor("BIRD gone", () => speaker().runningPid() === undefined, 5000);
    // Nothing left to stop: a no-op.
    await stopLeftoverSpeaker("h2", work);
  });

  it("says what is missing when BIRD is not installed, and leaves the config it was given", async () => {
    const bgp = parseBgpOptions("64512", [ROUTER.v4], [HOST.v4])!;
    const missing = new BirdSpeaker({ host: "h9", bgp, addresses: [HOST.v4], runDir: work, birdBinary: "bird-not-installed" });
    await expect(missing.advertise([BLOCK])).rejects.toThrow(
      `failed to start BIRD for host h9 (config ${join(work, "h9", "bird.conf")}): bird-not-installed is not installed (apt-get install bird2)`,
    );
  });
});
