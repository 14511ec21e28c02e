// What one attach costs on a host, against Debian's CNI ipvlan plugin (issue 10's benchmark). Runs inside the lab
// (lab/bench-attach.sh, through `npm run bench:attach`): ipvlan exists only there. On h1's eth0, in one run:
// (a) Trellis attaches through the Control API from one long-running client, each timed until h1's agent
//     reports the container ready, interleaved with
// (b) the CNI `ipvlan` plugin with `host-local` IPAM doing ADD into a fresh namespace, as a runtime calls it
//     (the network configuration on stdin, the CNI_* variables; the namespace made beforehand, untimed, and
//     the plugin entered into h1 with nsenter, whose exec is in the figure); then
// (c) the same Trellis attach once h1 holds HOST_CONTAINERS containers, and the agent's RSS; and
// (d) `trellis run -d` end to end, Node's start-up included, as a user runs it; and
// (e) an ADD through the `trellis` CNI plugin (dist/cni/trellis-cni.cjs) into a fresh namespace, interleaved with
//     (b), and the start-up of Node alone (an empty script) and the plugin's VERSION (its start-up, no agent asked),
//     so that the plugin's own cost can be told apart; and the same ADD asked of h1's agent's local API by this
//     long-running process, the call alone.
// Medians. Prints one line at the end, the format of the issue.
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { KV } from "@nats-io/kv";
import { codecOf } from "../libs/bus/codec.js";
import { connectBus, openBucket } from "../libs/bus/connection.js";
import { Buckets, hostKeysFilter, statusKey } from "../libs/bus/subjects.js";
import { ControlApi } from "../libs/control-client/index.js";
import { NetworkSpec } from "../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, EndpointStatus } from "../libs/proto/gen/trellis/v1/state.js";
import { agentSocketOf } from "../services/lab/config.js";
import { callAgent } from "../services/cni/agent-client.js";

const HOST = "h1";
const PARENT = "eth0";
const NETWORK = "bench";
const CNI_BIN = "/usr/lib/cni";
const CNI_SUBNET = "10.61.0.0/16";
const READY_TIMEOUT_MS = 120_000;
/** Attaches in flight while the host is filled: enough to keep the agent's queue busy. */
const FILL_CONCURRENCY = 8;
const statusCodec = codecOf(EndpointStatus);

const { values } = parseArgs({
  options: {
    rounds: { type: "string", default: "20" },
    containers: { type: "string", default: "200" },
    "trellis-runs": { type: "string", default: "5" },
    "agents-dir": { type: "string", default: "/run/trellis-lab/agents" },
  },
});
const ROUNDS = Number(values.rounds);
const HOST_CONTAINERS = Number(values.containers);
const TRELLIS_RUNS = Number(values["trellis-runs"]);

/** Every status h1's agent writes, from one watch: a controller's long-running view, not a watch per attach. */
class ReadyWatch {
  private readonly states = new Map<string, EndpointState>();
  private readonly waiters = new Map<string, () => void>();

  static async start(bucket: KV): Promise<ReadyWatch> {
    const watch = new ReadyWatch();
    const entries = await bucket.watch({ key: hostKeysFilter(HOST) });
    void (async () => {
      for await (const entry of entries) {
        if (entry.operation !== "PUT") continue;
        const state = statusCodec.decode(entry.value).state;
        watch.states.set(entry.key, state);
        if (state === EndpointState.ENDPOINT_STATE_READY || state === EndpointState.ENDPOINT_STATE_FAILED) watch.waiters.get(entry.key)?.();
      }
    })();
    return watch;
  }

  async ready(endpointId: string, container: string): Promise<void> {
    const key = statusKey(HOST, endpointId);
    const known = this.states.get(key);
    if (known === undefined || known === EndpointState.ENDPOINT_STATE_PENDING || known === EndpointState.ENDPOINT_STATE_UNSPECIFIED) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`container ${container} was not ready on ${HOST} after ${READY_TIMEOUT_MS} ms`)), READY_TIMEOUT_MS);
        this.waiters.set(key, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      this.waiters.delete(key);
    }
    if (this.states.get(key) !== EndpointState.ENDPOINT_STATE_READY) throw new Error(`container ${container} failed on ${HOST}`);
  }
}

/** Each timed attach's Control API call alone, until the planner answered: the rest is the agent's, and its report. */
const controlCalls: number[] = [];

async function trellisAttach(control: ControlApi, watch: ReadyWatch, container: string): Promise<number> {
  const started = performance.now();
  const endpoint = await control.attachEndpoint({ network: NETWORK, container, host: HOST, ipv4: "", ipv6: "" });
  controlCalls.push(performance.now() - started);
  await watch.ready(endpoint.id, container);
  return performance.now() - started;
}

/** Runs a program, feeding it `input`; rejects with its stderr when it fails. */
function run(argv: string[], env: NodeJS.ProcessEnv = process.env, input = ""): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), { env, stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    child.on("error", reject);
    // A program that does not read its stdin (node -e "") may be gone before the write: its exit status says how it went.
    child.stdin.on("error", () => undefined);
    child.on("close", (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${argv.join(" ")} failed (exit ${code}): ${stderr}${stdout}`))));
    child.stdin.end(input);
  });
}

const cniConfig = JSON.stringify({
  cniVersion: "1.0.0",
  name: "bench-cni",
  type: "ipvlan",
  master: PARENT,
  mode: "l2",
  ipam: { type: "host-local", subnet: CNI_SUBNET, dataDir: "/tmp/bench-cni-ipam" },
});

function cniEnv(command: "ADD" | "DEL", id: string): NodeJS.ProcessEnv {
  return { ...process.env, CNI_COMMAND: command, CNI_CONTAINERID: id, CNI_NETNS: `/run/netns/${id}`, CNI_IFNAME: "eth0", CNI_PATH: CNI_BIN };
}

/** One ADD into a fresh namespace, timed; then DEL and the namespace removed, untimed, so that h1 stays as it was. */
async function cniAdd(round: number): Promise<number> {
  const id = `bench-cni-${round}`;
  await run(["ip", "netns", "add", id]);
  const started = performance.now();
  const result = await run(["nsenter", `--net=/run/netns/${HOST}`, `${CNI_BIN}/ipvlan`], cniEnv("ADD", id), cniConfig);
  const took = performance.now() - started;
  if (!/"ips"/.test(result)) throw new Error(`the CNI plugin's ADD returned no address: ${result}`);
  await run(["nsenter", `--net=/run/netns/${HOST}`, `${CNI_BIN}/ipvlan`], cniEnv("DEL", id), cniConfig);
  await run(["ip", "netns", "delete", id]);
  return took;
}

const TRELLIS_PLUGIN = new URL("../cni/trellis-cni.cjs", import.meta.url).pathname;
const trellisCniConfig = JSON.stringify({ cniVersion: "1.0.0", name: "bench-trellis", type: "trellis", network: NETWORK, socket: agentSocketOf(HOST) });

/**
 * One ADD through the trellis plugin, timed until it answers (the agent has made the interface); then DEL and the
 * namespace removed, untimed. The plugin asks h1's agent on its socket (lab/bench-attach.sh starts the planner its
 * local API calls).
 */
async function trellisCniAdd(round: number): Promise<number> {
  const id = `bench-trellis-${round}`;
  await run(["ip", "netns", "add", id]);
  const started = performance.now();
  const result = await run([process.execPath, TRELLIS_PLUGIN], cniEnv("ADD", id), trellisCniConfig);
  const took = performance.now() - started;
  if (!/"ips"/.test(result)) throw new Error(`the trellis plugin's ADD returned no address: ${result}`);
  await run([process.execPath, TRELLIS_PLUGIN], cniEnv("DEL", id), trellisCniConfig);
  await run(["ip", "netns", "delete", id]);
  return took;
}

/** The same ADD asked of h1's agent's local API by this long-running process: the call alone, without the plugin. */
async function localApiAdd(round: number): Promise<number> {
  const id = `bench-local-${round}`;
  await run(["ip", "netns", "add", id]);
  const ref = { network: NETWORK, role: "main" as const, containerId: id, ifname: "eth0" };
  const started = performance.now();
  await callAgent(agentSocketOf(HOST), "add", { ...ref, netns: `/run/netns/${id}`, container: id, ipv4: "", ipv6: "" });
  const took = performance.now() - started;
  await callAgent(agentSocketOf(HOST), "del", ref);
  await run(["ip", "netns", "delete", id]);
  return took;
}

/** The plugin's VERSION: its own start-up (Node, its module, reading stdin), without asking the agent. */
async function pluginVersion(): Promise<number> {
  const started = performance.now();
  await run([process.execPath, TRELLIS_PLUGIN], { ...process.env, CNI_COMMAND: "VERSION" }, '{"cniVersion":"1.1.0"}');
  return performance.now() - started;
}

async function nodeStartup(): Promise<number> {
  const started = performance.now();
  await run([process.execPath, "-e", ""]);
  return performance.now() - started;
}

/** Attaches until h1 holds `count` containers, FILL_CONCURRENCY at a time. */
async function fill(control: ControlApi, watch: ReadyWatch, from: number, count: number): Promise<void> {
  let next = from;
  const loop = async () => {
    while (next < count) await trellisAttach(control, watch, `fill-${next++}`);
  };
  await Promise.all(Array.from({ length: FILL_CONCURRENCY }, loop));
}

/** The agent's RSS in MB, and its parts: anonymous (heaps, buffers) and file pages (the node binary, addons). */
function agentRss(): { rss: number; anon: number; file: number } {
  const { pid } = JSON.parse(readFileSync(`${values["agents-dir"]}/${HOST}.json`, "utf8")) as { pid: number };
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string) => {
    const kb = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(status);
    if (!kb) throw new Error(`failed to read ${name} of ${HOST}'s agent (pid ${pid}) from /proc/${pid}/status`);
    return Number(kb[1]) / 1024;
  };
  return { rss: field("VmRSS"), anon: field("RssAnon"), file: field("RssFile") };
}

function describeRss({ rss, anon, file }: { rss: number; anon: number; file: number }): string {
  return `${round0(rss)} MB (anonymous ${round0(anon)}, file ${round0(file)})`;
}

/** h1's agent's metrics endpoint, on its underlay address (services/lab/config.ts) and default port. */
const AGENT_METRICS_URL = "http://192.168.1.11:9712/metrics";

/** What the agent's V8 heap holds, from its own metrics: where the anonymous part of its RSS goes. */
async function agentHeap(): Promise<string> {
  const text = await fetch(AGENT_METRICS_URL).then(
    (response) => response.text(),
    (error: Error) => `failed to read ${AGENT_METRICS_URL}: ${error.message}`,
  );
  if (!text.includes("nodejs_heap_size_total_bytes")) return `heap unknown (${text.slice(0, 200)})`;
  const mb = (pattern: RegExp) => {
    const bytes = [...text.matchAll(pattern)].reduce((sum, match) => sum + Number(match[1]), 0);
    return round0(bytes / 1048576);
  };
  const space = (name: string) => `${name} ${mb(new RegExp(`^nodejs_heap_space_size_total_bytes\\{space="${name}"\\} (\\S+)`, "gm"))}`;
  return (
    `heap ${mb(/^nodejs_heap_size_total_bytes (\S+)/gm)} MB (used ${mb(/^nodejs_heap_size_used_bytes (\S+)/gm)}; ` +
    `${["old", "new", "code", "large_object"].map(space).join(", ")}), external ${mb(/^nodejs_external_memory_bytes (\S+)/gm)} MB`
  );
}

function median(samples: number[]): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

const round0 = (n: number) => Math.round(n);
const round2 = (n: number) => Math.round(n * 100) / 100;

async function main(): Promise<void> {
  const control = new ControlApi();
  const nc = await connectBus({ servers: process.env.TRELLIS_NATS_URL ?? "nats://127.0.0.1:4222", name: "bench-attach" });
  try {
    const watch = await ReadyWatch.start(await openBucket(nc, Buckets.status));
    await control.createNetwork(NetworkSpec.fromPartial({ name: NETWORK, driver: "ipvlan", subnets: ["10.60.0.0/16"], options: { parent: PARENT } }));
    // One of each first, untimed: the first attach and the first exec of the plugin pay for warming up.
    await trellisAttach(control, watch, "warm-up");
    await cniAdd(0);
    await trellisCniAdd(0);
    const trellis: number[] = [];
    const cni: number[] = [];
    const plugin: number[] = [];
    const node: number[] = [];
    const version: number[] = [];
    const local: number[] = [];
    controlCalls.length = 0;
    for (let round = 1; round <= ROUNDS; round++) {
      trellis.push(await trellisAttach(control, watch, `empty-${round}`));
      cni.push(await cniAdd(round));
      plugin.push(await trellisCniAdd(round));
      node.push(await nodeStartup());
      version.push(await pluginVersion());
      local.push(await localApiAdd(round));
    }
    console.log(`empty host: trellis ${trellis.map(round0).join(" ")} ms; cni-ipvlan ${cni.map(round0).join(" ")} ms`);
    console.log(`empty host: of each trellis attach, the Control API call ${controlCalls.map(round0).join(" ")} ms (median ${round0(median(controlCalls))}), the agent and its report the rest`);
    const [p, n, c0] = [median(plugin), median(node), median(cni)];
    console.log(`cni add: trellis plugin ${plugin.map(round0).join(" ")} ms; node start-up ${node.map(round0).join(" ")} ms`);
    console.log(`cni add: local API alone ${local.map(round0).join(" ")} ms`);
    console.log(`cni add: trellis ${round0(p)} ms (less node start-up ${round0(p - n)} ms), cni-ipvlan ${round0(c0)} ms, ratio less start-up ${round2((p - n) / c0)}, whole ${round2(p / c0)}, plugin VERSION ${round0(median(version))} ms, local API alone ${round0(median(local))} ms`);

    const [emptyRss, emptyHeap] = [agentRss(), await agentHeap()];
    await fill(control, watch, ROUNDS + 1, HOST_CONTAINERS);
    const full: number[] = [];
    for (let round = 1; round <= ROUNDS; round++) full.push(await trellisAttach(control, watch, `full-${round}`));
    const [fullRss, fullHeap] = [agentRss(), await agentHeap()];
    const rss = fullRss.rss;
    console.log(`at ${HOST_CONTAINERS} containers: trellis ${full.map(round0).join(" ")} ms`);
    console.log(`agent rss: after the empty host's rounds ${describeRss(emptyRss)}, at ${HOST_CONTAINERS} containers ${describeRss(fullRss)}`);
    console.log(`agent memory: after the empty host's rounds ${emptyHeap}; at ${HOST_CONTAINERS} containers ${fullHeap}`);

    const runs: number[] = [];
    for (let i = 1; i <= TRELLIS_RUNS; i++) {
      const started = performance.now();
      await run(["trellis", "run", "-d", `--net=${NETWORK}`, `--name=run-${i}`, `--host=${HOST}`]);
      runs.push(performance.now() - started);
    }
    console.log(`trellis run -d: ${runs.map(round0).join(" ")} ms`);

    const [a, c, a2, t] = [median(trellis), median(cni), median(full), median(runs)];
    console.log(
      `attach: trellis ${round0(a)} ms, cni-ipvlan ${round0(c)} ms, ratio ${round2(a / c)}, at ${HOST_CONTAINERS} containers trellis ${round0(a2)} ms (x${round2(a2 / a)}), agent rss ${round0(rss)} MB, trellis run ${round0(t)} ms`,
    );
  } finally {
    control.close();
    await nc.close();
  }
}

await main();
