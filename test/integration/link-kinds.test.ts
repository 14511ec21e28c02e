import { execFileSync, spawn } from "node:child_process";
import { readlinkSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unsupportedLinkKinds } from "../../libs/netlink/index.js";
import { NEEDED_LINK_KINDS } from "../../services/link-agent/link-kinds.js";
import { makeNamespaceFindingMissingKinds } from "../support/link-kinds.js";

// An agent finds out at start which link kinds its kernel lacks and says so in its heartbeat; the planner
// then refuses, before it writes anything, a container that needs one of them on that host. The
// development machines' kernel has no ipvlan, 802.1Q nor dummy: the place to prove both. Everything runs
// inside a namespace made here and removed after.

const inner = new URL("../support/link-kinds-scenario.mjs", import.meta.url).pathname;
const netlinkBuild = new URL("../../dist/libs/netlink/index.js", import.meta.url).href;
const host = `kinds${process.pid}`;
const namespace = `trellis-test-${host}`;
const missing = makeNamespaceFindingMissingKinds(namespace);

interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

interface Outcome {
  heartbeat: { host: string; missingLinkKinds?: string[] };
  creates: Record<string, CommandResult>;
  runs: Record<string, CommandResult>;
  before: Record<string, number>;
  after: Record<string, number>;
  ps: CommandResult;
  namespaces: string[];
}

function linksIn(name: string): string[] {
  const links = execFileSync("ip", ["-n", name, "-o", "link", "show"], { encoding: "utf8" });
  return links.trim().split("\n").map((line) => line.split(": ")[1]!);
}

afterAll(() => {
  execFileSync("ip", ["netns", "del", namespace]);
});

describe("finding out which link kinds the kernel lacks", () => {
  it("agrees with iproute2, trying each kind in a namespace of its own and leaving the caller where it was", async () => {
    const home = readlinkSync("/proc/thread-self/ns/net");
    expect(await unsupportedLinkKinds(NEEDED_LINK_KINDS)).toEqual(missing);
    expect(readlinkSync("/proc/thread-self/ns/net")).toBe(home);
  });

  it("really makes a link of each kind the kernel has, but not where it is asked from", () => {
    const script = `const { unsupportedLinkKinds } = await import(${JSON.stringify(netlinkBuild)});
      console.log(JSON.stringify(await unsupportedLinkKinds(["veth", "bridge"])));`;
    const answer = execFileSync("ip", ["netns", "exec", namespace, process.execPath, "--input-type=module", "-e", script], { encoding: "utf8" });
    expect(JSON.parse(answer)).toEqual([]);
    expect(linksIn(namespace)).toEqual(["lo"]);
  });
});

describe.skipIf(!missing.includes("ipvlan"))("a host whose kernel lacks ipvlan, 802.1Q and dummy", () => {
  let outcome: Outcome;

  beforeAll(async () => {
    execFileSync("ip", ["-n", namespace, "link", "set", "lo", "up"]);
    // Ended (SIGTERM, which the scenario passes on to its nats-server) before the hook's own timeout, so
    // that a scenario that hangs leaves no process behind.
    const child = spawn("ip", ["netns", "exec", namespace, process.execPath, inner, host], { stdio: ["ignore", "pipe", "pipe"], timeout: 45_000 });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    if (code !== 0) throw new Error(`the scenario failed (exit ${code}):\n${stderr}${stdout}`);
    outcome = JSON.parse(stdout.trim().split("\n").at(-1)!) as Outcome;
  });

  it("reports them in the agent's heartbeat", () => {
    expect(missing).toEqual(["ipvlan", "vlan", "dummy"]);
    expect(outcome.heartbeat).toMatchObject({ host, missingLinkKinds: missing });
  });

  it("still takes networks, which span every host, whatever their parent", () => {
    for (const result of Object.values(outcome.creates)) expect(result).toMatchObject({ code: 0 });
  });

  it("refuses trellis run --host on that host up front, saying what is wrong and what would be right", () => {
    const stderr = (name: string) => outcome.runs[name]!.stderr.trim();
    expect(Object.values(outcome.runs).map((run) => run.code)).toEqual([1, 1, 1]);
    expect(stderr("db_net")).toBe(`Error: host ${host} cannot run ipvlan containers: its kernel has no ipvlan support (modprobe ipvlan, or choose another host)`);
    expect(stderr("vlan_net")).toBe(
      `Error: host ${host} cannot run containers of network vlan_net: its kernel has no ipvlan support, nor 802.1Q support for the network's parent eth0.20, a VLAN sub-interface (modprobe ipvlan 8021q, or choose another host)`,
    );
    expect(stderr("iso_net")).toBe(
      `Error: host ${host} cannot run containers of network iso_net: its kernel has no ipvlan support, nor dummy support for the network's parent, a dummy link as the network is --internal (modprobe ipvlan dummy, or choose another host)`,
    );
  });

  it("writes nothing when it refuses: no network, container, desired state, name or address, and no namespace", () => {
    expect(Object.keys(outcome.before)).toHaveLength(5);
    expect(outcome.after).toEqual(outcome.before);
    expect(outcome.ps.stdout.trim().split("\n")).toHaveLength(1);
    expect(outcome.namespaces).toEqual([]);
  });
});
