import { execFileSync, spawn, spawnSync, type ChildProcessWithoutNullStreams } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { connect } from "node:net";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectBus } from "../../libs/bus/connection.js";
import { serveLocalApi } from "../../services/link-agent/local-api/server.js";
import { startNatsServer } from "../support/nats-server.js";

// Contract tests of the trellis and trellis-ipam CNI plugins on this machine's kernel (no ipvlan needed): the
// plugins as a runtime runs them, alone and under Debian's macvlan and bridge plugins (CNI_PATH), asking the
// agent's local API on its unix socket (served here as the agent serves it, with the agent's module). Everything
// runs in a namespace made here (its own loopback holds the control plane; bridge's sysctls and macvlan's links
// stay in it), and the "containers" are namespaces made here too; all are removed after.

const NS = `trtest-cni-${process.pid}`;
const HOST = "cnihost";
const SUBNET_PREFIX = "10.77.0.";
const REFERENCE_PLUGINS = "/usr/lib/cni";
const cli = new URL("../../dist/services/cli/main.js", import.meta.url).pathname;
const planeScript = new URL("../support/namespaced-control-plane.mjs", import.meta.url).pathname;

const work = mkdtempSync(join(tmpdir(), "trellis-cni-"));
const binDir = join(work, "bin");
const dataDir = join(work, "data");
const socket = join(work, "run", "agent.sock");
/** A local API whose planner is nowhere. */
const downSocket = join(work, "run", "down.sock");
let plane: ChildProcessWithoutNullStreams;
let planner = "";
let nats = "";

interface CniOutcome {
  code: number;
  json: Record<string, any> | undefined;
  stderr: string;
}

interface Call {
  command: string;
  config: Record<string, unknown> | string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
}

function containerNs(name: string): string {
  return `${NS}-${name}`;
}

function netnsPath(name: string): string {
  return `/run/netns/${containerNs(name)}`;
}

/** Runs a plugin in the test's namespace as a runtime does: CNI_* variables, the config on stdin. */
function cni(plugin: string, call: Call): Promise<CniOutcome> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    CNI_COMMAND: call.command,
    CNI_PATH: `${binDir}:${REFERENCE_PLUGINS}`,
    ...(call.containerId ? { CNI_CONTAINERID: call.containerId } : {}),
    ...(call.netns ? { CNI_NETNS: call.netns } : {}),
    ...(call.ifname ? { CNI_IFNAME: call.ifname } : {}),
    ...(call.args ? { CNI_ARGS: call.args } : {}),
  };
  const program = plugin.includes("/") ? plugin : join(plugin.startsWith("trellis") ? binDir : REFERENCE_PLUGINS, plugin);
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", NS, program], { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("close", (code) => resolve({ code: code ?? 1, json: stdout.trim() ? JSON.parse(stdout) : undefined, stderr }));
    child.stdin.end(typeof call.config === "string" ? call.config : JSON.stringify(call.config));
  });
}

/** The settings `trellis cni install` would write, pointed at this test's agent socket. */
function trellisSettings(network = "cni_l2") {
  return { network, socket };
}

function ipamConfig(type: string, version: string, extra: Record<string, unknown> = {}) {
  return { cniVersion: version, name: "cni_l2", type, ...extra, ipam: { type: "trellis-ipam", ...trellisSettings() } };
}

const macvlan = (version = "1.0.0") => ipamConfig("macvlan", version, { master: "mvparent", mode: "bridge" });
const bridge = (version = "0.4.0") => ipamConfig("bridge", version, { bridge: "trbr0", isGateway: false, ipMasq: false });
const ipamOnly = (version = "1.1.0", extra: Record<string, unknown> = {}) => ({ ...ipamConfig("trellis-ipam", version), ...extra });

function addressesIn(name: string, ifname = "eth0"): string[] {
  const links = JSON.parse(execFileSync("ip", ["-n", containerNs(name), "-j", "address", "show", "dev", ifname], { encoding: "utf8" })) as {
    addr_info: { local: string; prefixlen: number; scope: string }[];
  }[];
  return links[0]!.addr_info.filter((info) => info.scope !== "link").map((info) => `${info.local}/${info.prefixlen}`);
}

function hasLink(name: string, ifname: string): boolean {
  try {
    execFileSync("ip", ["-n", containerNs(name), "link", "show", "dev", ifname], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function records(): string[] {
  const folder = join(dataDir, "cni_l2");
  return existsSync(folder) ? readdirSync(folder).sort() : [];
}

beforeAll(async () => {
  execFileSync("ip", ["netns", "add", NS]);
  execFileSync("ip", ["-n", NS, "link", "set", "lo", "up"]);
  execFileSync("ip", ["-n", NS, "link", "add", "mvparent", "type", "veth", "peer", "name", "mvpeer"]);
  for (const link of ["mvparent", "mvpeer"]) execFileSync("ip", ["-n", NS, "link", "set", link, "up"]);
  for (const name of ["c1", "c2", "c3", "c4"]) execFileSync("ip", ["netns", "add", containerNs(name)]);
  plane = spawn("ip", ["netns", "exec", NS, process.execPath, planeScript, HOST, `--local-api=${socket},${downSocket},${dataDir}`]);
  let log = "";
  plane.stderr.on("data", (chunk: Buffer) => (log += chunk.toString()));
  const first = await new Promise<string>((resolve, reject) => {
    createInterface({ input: plane.stdout }).once("line", resolve);
    plane.once("exit", (code) => reject(new Error(`the control plane exited (${code}):\n${log}`)));
  });
  ({ planner, nats } = JSON.parse(first) as { planner: string; nats: string });
  const env = { ...process.env, TRELLIS_PLANNER_ADDR: planner, TRELLIS_NATS_URL: nats, TRELLIS_HOST: HOST, TRELLIS_AGENT_SOCKET: socket };
  execFileSync("ip", ["netns", "exec", NS, process.execPath, cli, "network", "create", "--subnet=10.77.0.0/24", "--gateway=10.77.0.1", "cni_l2"], { env });
  execFileSync(process.execPath, [cli, "cni", "install", `--bin-dir=${binDir}`, `--conf-dir=${join(work, "net.d")}`, "cni_l2"], { env });
}, 60_000);

afterAll(async () => {
  if (plane && plane.exitCode === null) {
    const exited = new Promise((resolve) => plane.once("exit", resolve));
    plane.stdin.end();
    await exited;
  }
  for (const name of ["c1", "c2", "c3", "c4", ""]) spawnSync("ip", ["netns", "del", name ? containerNs(name) : NS], { stdio: "ignore" });
  rmSync(work, { recursive: true, force: true });
}, 30_000);

describe("trellis cni install", () => {
  it("puts both plugins in the bin dir and a conflist for the network, naming the agent's socket, in the conf dir", async () => {
    expect(readdirSync(binDir).sort()).toEqual(["trellis", "trellis-ipam"]);
    expect(readFileSync(join(binDir, "trellis"), "utf8").split("\n")[0]).toBe(`#!${process.execPath}`);
    const conflist = JSON.parse(readFileSync(join(work, "net.d", "cni_l2.conflist"), "utf8"));
    expect(conflist).toEqual({ cniVersion: "1.0.0", name: "cni_l2", plugins: [{ type: "trellis", network: "cni_l2", socket, capabilities: { ips: true } }] });
  });

  it("--with-node puts this Node beside them, and the plugins run with it", async () => {
    const withNode = join(work, "bin-node");
    execFileSync(process.execPath, [cli, "cni", "install", "--with-node", `--bin-dir=${withNode}`, `--conf-dir=${join(work, "net.d-node")}`, "cni_l2"], { env: { ...process.env, TRELLIS_AGENT_SOCKET: socket } });
    expect(readdirSync(withNode).sort()).toEqual(["trellis", "trellis-ipam", "trellis-node"]);
    expect(readFileSync(join(withNode, "trellis-ipam"), "utf8").split("\n")[0]).toBe(`#!${join(withNode, "trellis-node")}`);
    expect(await cni(join(withNode, "trellis"), { command: "VERSION", config: { cniVersion: "1.1.0" } })).toMatchObject({ code: 0, json: { cniVersion: "1.1.0" } });
  });

  it("the plugin is small and holds no gRPC, NATS, protobuf or HTTP: one CommonJS file that only asks the agent", () => {
    const plugin = readFileSync(join(binDir, "trellis"), "utf8");
    expect(plugin.length).toBeLessThan(20_000);
    expect(plugin).not.toMatch(/grpc|nats-io|protobuf|node:http/i);
    expect(plugin).toMatch(/require\("node:net"\)/);
  });

  it("answers a line it cannot take with a CNI error on the socket, and goes on serving", async () => {
    const ask = (line: string) =>
      new Promise<unknown>((resolve, reject) => {
        let answer = "";
        const connection = connect(socket).on("error", reject);
        connection.on("data", (chunk: Buffer) => (answer += chunk.toString())).on("end", () => resolve(JSON.parse(answer)));
        connection.end(line);
      });
    expect(await ask("POST /v1/cni/add HTTP/1.1\r\n\r\n")).toEqual({ error: { code: 6, msg: expect.stringMatching(/^failed to decode the request: /) } });
    expect(await ask(`${JSON.stringify({ call: "frob", request: {} })}\n`)).toEqual({
      error: { code: 4, msg: `the agent's local API has no call "frob": the plugin and the agent differ in version; install the agent's plugin (trellis cni install)` },
    });
    expect(await ask(`${JSON.stringify({ call: "del", request: { network: "cni_l2" } })}\n`)).toEqual({
      error: { code: 6, msg: "invalid del request: role must be a string, containerId must be a string, ifname must be a string" },
    });
    expect(await cni("trellis", { command: "STATUS", config: { cniVersion: "1.1.0", name: "x", type: "trellis", ...trellisSettings() } })).toMatchObject({ code: 0 });
  });

  it("the agent's socket is root's alone", () => {
    expect(statSync(socket).mode & 0o777).toBe(0o600);
    expect(statSync(dirname(socket)).mode & 0o777).toBe(0o700);
  });

  it("is refused to a second agent while the first serves it, which goes on serving", async () => {
    const server = await startNatsServer();
    const nc = await connectBus({ servers: server.url, name: "cni-test" });
    try {
      await expect(serveLocalApi(nc, { socket, host: HOST, planner: "127.0.0.1:1" })).rejects.toThrow(
        `failed to serve the agent's local API on ${socket}: another agent serves it: stop that one, or give this one its own socket (--socket=PATH)`,
      );
      expect(await cni("trellis", { command: "STATUS", config: { cniVersion: "1.1.0", name: "x", type: "trellis", ...trellisSettings() } })).toMatchObject({ code: 0 });
    } finally {
      await nc.close();
      await server.stop();
    }
  });
});

describe("VERSION and bad input", () => {
  it("answers the versions it speaks", async () => {
    const outcome = await cni("trellis", { command: "VERSION", config: { cniVersion: "1.1.0" } });
    expect(outcome).toMatchObject({ code: 0, json: { cniVersion: "1.1.0", supportedVersions: ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] } });
  });

  const add = { command: "ADD", containerId: "bad1", netns: netnsPath("c1"), ifname: "eth0" };
  it.each([
    ["stdin that is not JSON", { ...add, config: "{not json" }, 6, /^failed to decode the network config on stdin/],
    ["no cniVersion", { ...add, config: { name: "x", type: "trellis", network: "cni_l2" } }, 7, /"cniVersion" is missing; give one of 0\.3\.0, 0\.3\.1, 0\.4\.0, 1\.0\.0, 1\.1\.0/],
    ["a version it does not speak", { ...add, config: { cniVersion: "0.2.0", name: "x", type: "trellis", network: "cni_l2" } }, 1, /^incompatible CNI version 0\.2\.0: trellis supports 0\.3\.0/],
    ["no network", { ...add, config: { cniVersion: "1.0.0", name: "x", type: "trellis" } }, 7, /no Trellis network named; add "network": "<Trellis network>"/],
    ["an unknown command", { ...add, command: "FROB", config: { cniVersion: "1.0.0" } }, 4, /^invalid CNI_COMMAND "FROB": give one of ADD, DEL, CHECK, STATUS, GC, VERSION/],
    ["ADD without CNI_NETNS", { ...add, netns: undefined, config: { cniVersion: "1.0.0", name: "x", type: "trellis", ...trellisSettings() } }, 4, /^invalid environment for ADD: CNI_NETNS must be set/],
  ])("refuses %s with its spec code", async (_what, call, code, message) => {
    const outcome = await cni("trellis", call as Call);
    expect(outcome.code).not.toBe(0);
    expect(outcome.json).toMatchObject({ code });
    expect(outcome.json!.msg).toMatch(message);
    expect(records()).toEqual([]);
  });

  it("says which network is unknown, and holds nothing", async () => {
    const outcome = await cni("trellis", { ...add, config: { cniVersion: "1.0.0", name: "x", type: "trellis", ...trellisSettings("nonet") } });
    expect(outcome.json).toMatchObject({ code: 100, msg: "Trellis refused: network nonet not found: create it with trellis network create, or see trellis network ls" });
    expect(existsSync(join(dataDir, "nonet")) ? readdirSync(join(dataDir, "nonet")) : []).toEqual([]);
  });

  it("refuses an interface name the kernel would not take, from the planner's validation", async () => {
    const outcome = await cni("trellis-ipam", { ...add, ifname: "a-name-far-too-long", config: ipamOnly() });
    expect(outcome.json).toMatchObject({ code: 100 });
    expect(outcome.json!.msg).toBe(`Trellis refused: invalid ifname "a-name-far-too-long": use 1-15 characters, none of them '/', ':' or white space (e.g. eth0, net1)`);
    expect(records()).toEqual([]);
  });

  it("refuses a network name that would leave the agent's data folder, and writes nothing", async () => {
    const outcome = await cni("trellis", { ...add, config: { cniVersion: "1.0.0", name: "x", type: "trellis", ...trellisSettings("../escape") } });
    expect(outcome.json).toMatchObject({ code: 7, msg: `invalid network "../escape": use letters, digits, "_", "." and "-", starting with a letter or digit` });
    expect(existsSync(join(work, "escape"))).toBe(false);
  });

  it("trellis-ipam wants the network in its ipam section", async () => {
    const outcome = await cni("trellis-ipam", { ...add, config: { cniVersion: "1.0.0", name: "x", type: "macvlan", ipam: { type: "trellis-ipam" } } });
    expect(outcome.json).toMatchObject({ code: 7 });
    expect(outcome.json!.msg).toContain(`"ipam": {"type": "trellis-ipam", "network": "<Trellis network>"}`);
  });
});

describe("STATUS and an unreachable control plane", () => {
  it("answers nothing, successfully, when the planner and NATS answer the host's agent", async () => {
    expect(await cni("trellis", { command: "STATUS", config: { cniVersion: "1.1.0", name: "x", type: "trellis", ...trellisSettings() } })).toMatchObject({ code: 0, json: undefined });
  });

  it("is 50 when no agent serves the socket, and ADD is 11 (try again later) then", async () => {
    const nowhere = join(work, "run", "none.sock");
    const config = { cniVersion: "1.1.0", name: "x", type: "trellis", ...trellisSettings(), socket: nowhere };
    const outcome = await cni("trellis", { command: "STATUS", config });
    expect(outcome.json).toMatchObject({ code: 50, msg: `Trellis is not available on this host: no agent serves ${nowhere}: start this host's agent (trellis agent), or name its socket in the config's "socket"` });
    const add = await cni("trellis", { command: "ADD", containerId: "noagent1", netns: netnsPath("c1"), ifname: "eth0", config });
    expect(add.json).toMatchObject({ code: 11, msg: `failed to reach this host's Trellis agent: no agent serves ${nowhere}: start this host's agent (trellis agent), or name its socket in the config's "socket"` });
    expect(records()).toEqual([]);
  });

  it("is 50 when the agent reaches no control plane, and ADD is 11 (try again later) then", async () => {
    const config = { cniVersion: "1.1.0", name: "x", type: "trellis", ...trellisSettings(), socket: downSocket };
    const status = await cni("trellis", { command: "STATUS", config });
    expect(status.json).toMatchObject({ code: 50 });
    expect(status.json!.msg).toMatch(/^Trellis is not available: failed to reach the control plane: failed to reach the planner at 127\.0\.0\.1:1: connection refused/);
    const add = await cni("trellis-ipam", { command: "ADD", containerId: "down1", netns: netnsPath("c1"), ifname: "eth0", config: { ...ipamOnly(), ipam: { type: "trellis-ipam", ...trellisSettings(), socket: downSocket } } });
    expect(add.json).toMatchObject({ code: 11 });
    expect(add.json!.msg).toMatch(/^failed to reach the control plane: failed to reach the planner at 127\.0\.0\.1:1/);
    expect(records()).toEqual([]);
  });
});

describe("trellis-ipam under Debian's macvlan and bridge plugins", () => {
  let first = "";

  it("macvlan: the container's eth0 gets a cluster address with its gateway and default route", async () => {
    const outcome = await cni("macvlan", { command: "ADD", containerId: "mv1", netns: netnsPath("c1"), ifname: "eth0", args: "IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop", config: macvlan() });
    expect(outcome, JSON.stringify(outcome)).toMatchObject({ code: 0, stderr: "" });
    const ip = outcome.json!.ips[0];
    expect(ip).toMatchObject({ gateway: "10.77.0.1", interface: 0 });
    expect(ip.address.startsWith(SUBNET_PREFIX) && ip.address.endsWith("/24")).toBe(true);
    expect(outcome.json!.interfaces[0]).toMatchObject({ name: "eth0", sandbox: netnsPath("c1") });
    first = ip.address;
    expect(addressesIn("c1")).toEqual([first]);
    expect(execFileSync("ip", ["-n", containerNs("c1"), "route", "show", "default"], { encoding: "utf8" }).trim()).toBe("default via 10.77.0.1 dev eth0");
    expect(records()).toEqual(["mv1-eth0"]);
  });

  it("names the container by its pod and namespace (web.shop), which Trellis then lists", () => {
    const ps = execFileSync("ip", ["netns", "exec", NS, process.execPath, cli, "ps", "--net=cni_l2"], { encoding: "utf8", env: { ...process.env, TRELLIS_PLANNER_ADDR: planner } });
    expect(ps).toContain("web.shop");
    expect(ps).toContain(first.split("/")[0]);
  });

  it("a second container gets another address", async () => {
    const outcome = await cni("macvlan", { command: "ADD", containerId: "mv2", netns: netnsPath("c2"), ifname: "eth0", config: macvlan() });
    expect(outcome, JSON.stringify(outcome)).toMatchObject({ code: 0 });
    expect(outcome.json!.ips[0].address).not.toBe(first);
    expect(addressesIn("c2")).toEqual([outcome.json!.ips[0].address]);
  });

  it("DEL twice succeeds, and the address is free again (a static IP= of it is given to the next)", async () => {
    const del = { command: "DEL", containerId: "mv1", netns: netnsPath("c1"), ifname: "eth0", config: macvlan() };
    expect(await cni("macvlan", del)).toMatchObject({ code: 0, stderr: "" });
    expect(hasLink("c1", "eth0")).toBe(false);
    expect(await cni("macvlan", del)).toMatchObject({ code: 0, stderr: "" });
    const again = await cni("macvlan", { command: "ADD", containerId: "mv3", netns: netnsPath("c3"), ifname: "eth0", args: `IgnoreUnknown=1;IP=${first.split("/")[0]}`, config: macvlan() });
    expect(again, JSON.stringify(again)).toMatchObject({ code: 0 });
    expect(again.json!.ips[0].address).toBe(first);
    expect(addressesIn("c3")).toEqual([first]);
  });

  it("DEL of a container whose namespace is already gone releases its address", async () => {
    execFileSync("ip", ["netns", "del", containerNs("c2")]);
    expect(await cni("macvlan", { command: "DEL", containerId: "mv2", netns: netnsPath("c2"), ifname: "eth0", config: macvlan() })).toMatchObject({ code: 0 });
    execFileSync("ip", ["netns", "add", containerNs("c2")]);
    expect(records()).toEqual(["mv3-eth0"]);
  });

  it("bridge (CNI 0.4.0): the result names each address's IP version; CHECK passes; DEL releases", async () => {
    const outcome = await cni("bridge", { command: "ADD", containerId: "br1", netns: netnsPath("c4"), ifname: "eth0", config: bridge() });
    expect(outcome, JSON.stringify(outcome)).toMatchObject({ code: 0, stderr: "" });
    expect(outcome.json!.ips[0]).toMatchObject({ version: "4", gateway: "10.77.0.1" });
    const address = outcome.json!.ips[0].address as string;
    expect(addressesIn("c4")).toEqual([address]);
    expect(await cni("bridge", { command: "CHECK", containerId: "br1", netns: netnsPath("c4"), ifname: "eth0", config: { ...bridge(), prevResult: outcome.json } })).toMatchObject({ code: 0 });
    expect(await cni("bridge", { command: "DEL", containerId: "br1", netns: netnsPath("c4"), ifname: "eth0", config: bridge() })).toMatchObject({ code: 0 });
    expect(records()).toEqual(["mv3-eth0"]);
  });
});

describe("GC", () => {
  it("releases every attachment of the network on this host that the runtime no longer lists, and keeps the rest", async () => {
    const kept = await cni("trellis-ipam", { command: "ADD", containerId: "gc1", netns: netnsPath("c1"), ifname: "eth0", config: ipamOnly() });
    const stale = await cni("trellis-ipam", { command: "ADD", containerId: "gc2", netns: netnsPath("c2"), ifname: "eth0", config: ipamOnly() });
    expect([kept.code, stale.code]).toEqual([0, 0]);
    // Its own result, which a main plugin may pass on: the address with its gateway, the route, the host's DNS server.
    expect(kept.json).toMatchObject({ cniVersion: "1.1.0", ips: [{ gateway: "10.77.0.1" }], routes: [{ dst: "0.0.0.0/0", gw: "10.77.0.1" }], dns: { nameservers: ["127.0.0.11"] } });
    expect(kept.json).not.toHaveProperty("interfaces");
    const valid = [{ containerID: "gc1", ifname: "eth0" }, { containerID: "mv3", ifname: "eth0" }];
    expect(await cni("trellis-ipam", { command: "GC", config: ipamOnly("1.1.0", { "cni.dev/valid-attachments": valid }) })).toMatchObject({ code: 0 });
    expect(records()).toEqual(["gc1-eth0", "mv3-eth0"]);
    const staleAddress = (stale.json!.ips[0].address as string).split("/")[0];
    const reused = await cni("trellis-ipam", { command: "ADD", containerId: "gc3", netns: netnsPath("c4"), ifname: "eth0", args: `IP=${staleAddress}`, config: ipamOnly() });
    expect(reused.json!.ips[0].address).toBe(stale.json!.ips[0].address);
    const keptAddress = (kept.json!.ips[0].address as string).split("/")[0];
    const taken = await cni("trellis-ipam", { command: "ADD", containerId: "gc4", netns: netnsPath("c4"), ifname: "net1", args: `IP=${keptAddress}`, config: ipamOnly() });
    expect(taken.json).toMatchObject({ code: 100 });
    expect(taken.json!.msg).toContain(keptAddress);
  });
});
