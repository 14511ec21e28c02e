// The control plane at cluster scale (issue 9's benchmark), in one run: a real nats-server, `trellis ipam`
// and K `trellis planner` replicas in their own processes, H hosts registered by heartbeat records that this
// benchmark writes (it measures the control plane, not the kernel: no agents), and
// (1) N attaches one after another on one L2 network over the Control API: p50 and p99 per band of N/8
//     containers already attached;
// (2) N attaches across 10 networks from 16 concurrent clients: attaches/s and p99;
// (3) IPAM's own allocation rate at 16 clients, as bench:ipam measures it: the ceiling an attach can approach;
// (4) the largest desired-state and names values in their buckets, and each planner's RSS at the end.
// Calls go through libs/control-client, spread over the replicas. Every loop is bounded: a call gives up at
// its deadline, and a phase stops after MAX_FAILURES_IN_A_ROW failed attaches in a row.
// Usage: node dist/bench/scale.js [--containers=N] [--hosts=H] [--planners=K] [--ipam-cycles=C]
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { JetStreamApiCodes, JetStreamApiError, jetstreamManager } from "@nats-io/jetstream";
import { Kvm, type KV } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { codecOf } from "../libs/bus/codec.js";
import { connectBus, openBucket } from "../libs/bus/connection.js";
import { Buckets } from "../libs/bus/subjects.js";
import { ControlApi } from "../libs/control-client/index.js";
import { NetworkSpec, type EndpointSpec } from "../libs/proto/gen/trellis/v1/network.js";
import { HostRecord } from "../libs/proto/gen/trellis/v1/state.js";
import { connectIpam } from "../services/ipam/client.js";
import { startNatsServer, type NatsServer } from "../test/support/nats-server.js";
import { startService, type ServiceProcess } from "../test/support/trellis-service.js";
import { percentile, printLevel, runLevel, trellisAllocator, WARM_UP_CYCLES, type LevelResult } from "./allocation-rate.js";

const BANDS = 8;
const NETWORKS_OF_PHASE_2 = 10;
const CLIENTS = 16;
/** Agents heartbeat every 2 s and count as gone after 10 s: every record is refreshed well within that. */
const HEARTBEAT_MS = 3_000;
/** What every benchmark host reports (HostRecord.interfaces): the networks' parent is among them. */
const INTERFACES = ["lo", "eth0"];
const PARENT = "eth0";
/** A call's own bound: today's planner takes seconds per attach at tens of thousands of containers. */
const CALL_TIMEOUT_MS = 60_000;
const MAX_FAILURES_IN_A_ROW = 20;
const WARM_UP_ATTACHES = 32;
const SETTLE_TIMEOUT_MS = 120_000;
const hostCodec = codecOf(HostRecord);

interface Options {
  containers: number;
  hosts: number;
  planners: number;
  ipamCycles: number;
}

interface Attached {
  latencies: number[];
  failures: number;
  seconds: number;
}

function parseOptions(): Options {
  const { values } = parseArgs({
    options: {
      containers: { type: "string", default: "20000" },
      hosts: { type: "string", default: "500" },
      planners: { type: "string", default: "2" },
      "ipam-cycles": { type: "string", default: "4000" },
    },
  });
  const whole = (name: string, text: string, least: number) => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || value < least) throw new Error(`invalid --${name} "${text}": expected a whole number of at least ${least}`);
    return value;
  };
  return {
    containers: whole("containers", values.containers, BANDS),
    hosts: whole("hosts", values.hosts, 1),
    planners: whole("planners", values.planners, 1),
    ipamCycles: whole("ipam-cycles", values["ipam-cycles"], 1),
  };
}

const hostName = (i: number) => `host-${i}`;

/** The record an agent heartbeats with, encoded with the agent's codec; the networks' parent is among its interfaces. */
function hostRecord(i: number): Uint8Array {
  return hostCodec.encode(
    HostRecord.fromPartial({ host: hostName(i), address: `172.16.${i >> 8}.${i & 255}`, role: "host", heartbeatAt: new Date().toISOString(), interfaces: INTERFACES }),
  );
}

/** Writes every host's record now, then refreshes them spread over each HEARTBEAT_MS, as H agents would. */
async function startHeartbeats(hosts: KV, count: number): Promise<() => void> {
  await Promise.all(Array.from({ length: count }, (_, i) => hosts.put(hostName(i), hostRecord(i))));
  const ticksPerRound = 20;
  const perTick = Math.ceil(count / ticksPerRound);
  let next = 0;
  const timer = setInterval(() => {
    for (let k = 0; k < perTick; k++, next = (next + 1) % count) {
      hosts.put(hostName(next), hostRecord(next)).catch((error: Error) => console.error(`failed to heartbeat ${hostName(next)}: ${error.message}`));
    }
  }, HEARTBEAT_MS / ticksPerRound);
  return () => clearInterval(timer);
}

/** Waits until the planners have stopped writing desired state (for the hosts just registered): 1 s without a write. */
async function settle(nc: NatsConnection): Promise<void> {
  const jsm = await jetstreamManager(nc);
  const deadline = Date.now() + SETTLE_TIMEOUT_MS;
  let last = -1;
  for (;;) {
    const info = await jsm.streams.info(`KV_${Buckets.desired}`).catch(() => undefined);
    const written = info?.state.last_seq ?? 0;
    if (written === last || Date.now() > deadline) return;
    last = written;
    await new Promise((resolve) => setTimeout(resolve, 1_000));
  }
}

/** A subnet of 2^bits addresses from `base` (an IPv4 address as a number), as a CIDR. */
function subnet(base: number, bits: number): string {
  const octets = [24, 16, 8, 0].map((shift) => (base >>> shift) & 255);
  return `${octets.join(".")}/${32 - bits}`;
}

/** Address bits for `count` containers with room to spare, a /24 at the least. */
function bitsFor(count: number): number {
  return Math.max(8, Math.ceil(Math.log2(count * 1.25 + 16)));
}

function l2Network(name: string, cidr: string): NetworkSpec {
  return NetworkSpec.fromPartial({ name, driver: "ipvlan", subnets: [cidr], options: { parent: PARENT } });
}

/** One client per planner, each trying its own planner first and the others after it. */
function clientsFor(planners: ServiceProcess[], count: number): ControlApi[] {
  const addresses = planners.map((p) => p.address);
  return Array.from(
    { length: count },
    (_, i) => new ControlApi({ addresses: [...addresses.slice(i % addresses.length), ...addresses.slice(0, i % addresses.length)], timeoutMs: CALL_TIMEOUT_MS, attemptTimeoutMs: CALL_TIMEOUT_MS }),
  );
}

type Attach = (spec: EndpointSpec) => Promise<unknown>;

/**
 * `count` attaches from concurrent loops, one per element of `loops`, the i-th attach made by spec(i).
 * `done` hears of each, with its latency (undefined when it failed). Bounded: at most `count` calls, each
 * bounded by its deadline, and the phase stops early after MAX_FAILURES_IN_A_ROW failures in a row.
 */
async function attachAll(loops: Attach[], count: number, spec: (i: number) => EndpointSpec, done?: (i: number, ms: number | undefined) => void): Promise<Attached> {
  const latencies: number[] = [];
  let failures = 0;
  let inARow = 0;
  let next = 0;
  const started = performance.now();
  const loop = async (attach: Attach) => {
    while (next < count && inARow < MAX_FAILURES_IN_A_ROW) {
      const i = next++;
      const callStarted = performance.now();
      try {
        await attach(spec(i));
        const ms = performance.now() - callStarted;
        latencies.push(ms);
        inARow = 0;
        done?.(i, ms);
      } catch (error) {
        failures++;
        inARow++;
        if (failures <= 5) console.error(`  attach ${spec(i).container} failed: ${(error as Error).message}`);
        done?.(i, undefined);
      }
    }
  };
  await Promise.all(loops.map(loop));
  if (inARow >= MAX_FAILURES_IN_A_ROW) console.error(`  stopped after ${MAX_FAILURES_IN_A_ROW} failed attaches in a row`);
  return { latencies, failures, seconds: (performance.now() - started) / 1000 };
}

/** (1): one attach at a time, the replicas in turn; latencies by band of containers already there, each printed when done. */
async function sequentialAttaches(clients: ControlApi[], options: Options): Promise<{ bands: number[][]; all: number[]; failures: number }> {
  const n = options.containers;
  await clients[0]!.createNetwork(l2Network("scale-l2", subnet(10 << 24, bitsFor(n))));
  const bands: number[][] = Array.from({ length: BANDS }, () => []);
  const bandOf = (i: number) => Math.min(BANDS - 1, Math.floor((i * BANDS) / n));
  let turn = 0;
  const inTurn: Attach = (spec) => clients[turn++ % clients.length]!.attachEndpoint(spec);
  const spec = (i: number): EndpointSpec => ({ network: "scale-l2", container: `s1-${i}`, host: hostName(i % options.hosts), ipv4: "", ipv6: "" });
  const result = await attachAll([inTurn], n, spec, (i, latency) => {
    if (latency !== undefined) bands[bandOf(i)]!.push(latency);
    if (i === n - 1 || bandOf(i + 1) !== bandOf(i)) printBand(bandOf(i), bands[bandOf(i)]!, n);
  });
  return { bands: bands.map((band) => [...band].sort((a, b) => a - b)), all: [...result.latencies].sort((a, b) => a - b), failures: result.failures };
}

function printBand(band: number, latencies: number[], n: number): void {
  const sorted = [...latencies].sort((a, b) => a - b);
  const from = Math.ceil((band * n) / BANDS);
  const to = Math.ceil(((band + 1) * n) / BANDS) - 1;
  console.log(`  ${`${from}–${to}`.padEnd(16)} p50 ${ms(percentile(sorted, 0.5)).padStart(8)} ms   p99 ${ms(percentile(sorted, 0.99)).padStart(8)} ms   (${sorted.length} attaches)`);
}

/** (2): CLIENTS concurrent clients over NETWORKS_OF_PHASE_2 networks. */
async function concurrentAttaches(planners: ServiceProcess[], options: Options): Promise<{ perSecond: number; p50: number; p99: number; failures: number; attached: number }> {
  const n = options.containers;
  const bits = bitsFor(Math.ceil(n / NETWORKS_OF_PHASE_2));
  const clients = clientsFor(planners, CLIENTS);
  try {
    for (let k = 0; k < NETWORKS_OF_PHASE_2; k++) {
      await clients[0]!.createNetwork(l2Network(`scale-m${k}`, subnet((10 << 24) + (128 << 16) + k * 2 ** bits, bits)));
    }
    const loops = clients.map((client): Attach => (spec) => client.attachEndpoint(spec));
    const result = await attachAll(loops, n, (i) => ({
      network: `scale-m${i % NETWORKS_OF_PHASE_2}`,
      container: `s2-${i}`,
      host: hostName(i % options.hosts),
      ipv4: "",
      ipv6: "",
    }));
    const sorted = [...result.latencies].sort((a, b) => a - b);
    return {
      perSecond: result.latencies.length / result.seconds,
      p50: percentile(sorted, 0.5),
      p99: percentile(sorted, 0.99),
      failures: result.failures,
      attached: result.latencies.length,
    };
  } finally {
    for (const client of clients) client.close();
  }
}

/** (3): IPAM alone, as bench:ipam measures it, on a network of its own. */
async function ipamRate(ipamAddress: string, cycles: number): Promise<LevelResult> {
  const ipam = connectIpam(ipamAddress);
  try {
    const networkId = "scale-ipam-rate";
    await ipam.allocateSubnets({ networkId, withGateway: true, subnets: [{ cidr: "100.64.0.0/16", gateway: "", ipv6: false }] });
    const allocator = trellisAllocator(ipam, networkId, hostName(0));
    await runLevel(allocator, 4, WARM_UP_CYCLES);
    const result = await runLevel(allocator, CLIENTS, cycles);
    printLevel("  ipam", result);
    return result;
  } finally {
    ipam.close();
  }
}

/** (4): the largest value of a bucket (undefined when the bucket does not exist), reading every key once. */
async function largestValue(nc: NatsConnection, bucket: string): Promise<{ bytes: number; key: string; keys: number } | undefined> {
  try {
    await (await jetstreamManager(nc)).streams.info(`KV_${bucket}`);
  } catch (error) {
    if (error instanceof JetStreamApiError && error.code === JetStreamApiCodes.StreamNotFound) return undefined;
    throw error;
  }
  const kv = await new Kvm(nc).open(bucket);
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  let largest = { bytes: 0, key: "", keys: keys.length };
  for (let start = 0; start < keys.length; start += 64) {
    const entries = await Promise.all(keys.slice(start, start + 64).map((key) => kv.get(key)));
    for (const entry of entries) {
      if (entry && entry.operation === "PUT" && entry.value.length > largest.bytes) largest = { ...largest, bytes: entry.value.length, key: entry.key };
    }
  }
  return largest;
}

/** The buckets whose values grow with the cluster: desired state, and names once the planner writes them. */
function sizedBuckets(): string[] {
  const buckets = Buckets as Record<string, string>;
  return ["desired", "names"].flatMap((name) => (buckets[name] ? [buckets[name]] : []));
}

function rssMegabytes(pid: number): number {
  const line = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:"));
  return Number(/(\d+)/.exec(line ?? "")?.[1] ?? 0) / 1024;
}

function ms(value: number): string {
  return value.toFixed(1);
}

/** Unmeasured attaches and detaches through every replica: connections, JIT and caches warm for all of them. */
async function warmUp(clients: ControlApi[], options: Options): Promise<void> {
  await clients[0]!.createNetwork(l2Network("scale-warm", "10.255.0.0/24"));
  const containers = Array.from({ length: WARM_UP_ATTACHES }, (_, i) => `warm-${i}`);
  for (const [i, container] of containers.entries()) {
    await clients[i % clients.length]!.attachEndpoint({ network: "scale-warm", container, host: hostName(i % options.hosts), ipv4: "", ipv6: "" });
  }
  for (const [i, container] of containers.entries()) await clients[i % clients.length]!.detachEndpoint(container);
}

/** What the run left, checked once at the end: every attach that succeeded listed once, no address given twice. */
async function checkEndpoints(client: ControlApi, expected: number): Promise<void> {
  const endpoints = (await client.listEndpoints()).filter((e) => e.container.startsWith("s1-") || e.container.startsWith("s2-"));
  const held = endpoints.flatMap((e) => e.addresses.map((address) => `${e.networkId} ${address}`));
  const twice = held.length - new Set(held).size;
  const containers = new Set(endpoints.map((e) => e.container)).size;
  console.log(`  endpoints: ${endpoints.length} listed for ${expected} attaches that succeeded, ${endpoints.length - containers} container(s) listed twice, ${twice} address(es) given twice`);
}

async function run(options: Options, running: { nats?: NatsServer; services: ServiceProcess[] }): Promise<void> {
  const nats = await startNatsServer();
  running.nats = nats;
  const logOf = (name: string) => (line: string) => {
    if (line.trim() !== "") console.error(`  [${name}] ${line}`);
  };
  const ipam = await startService("ipam", [`--nats=${nats.url}`, "--listen=127.0.0.1:0"], { onLine: logOf("ipam") });
  running.services.push(ipam);
  const planners: ServiceProcess[] = [];
  for (let k = 0; k < options.planners; k++) {
    const planner = await startService("planner", [`--nats=${nats.url}`, "--listen=127.0.0.1:0", `--ipam=${ipam.address}`], { onLine: logOf(`planner ${k}`) });
    planners.push(planner);
    running.services.push(planner);
  }
  const nc = await connectBus({ servers: nats.url, name: "bench-scale" });
  const stopHeartbeats = await startHeartbeats(await openBucket(nc, Buckets.hosts), options.hosts);
  const clients = clientsFor(planners, planners.length);
  try {
    console.log(`scale bench: ${options.containers} containers, ${options.hosts} hosts, ${options.planners} planner(s) at ${planners.map((p) => p.address).join(", ")}`);
    await settle(nc);
    await warmUp(clients, options);

    console.log(`(1) ${options.containers} attaches one after another on one l2 network, by containers already attached:`);
    const sequential = await sequentialAttaches(clients, options);
    const first = percentile(sequential.bands[0]!, 0.5);
    const last = percentile(sequential.bands[BANDS - 1]!, 0.5);
    const p99 = percentile(sequential.all, 0.99);
    console.log(`  all: p50 ${ms(percentile(sequential.all, 0.5))} ms, p99 ${ms(p99)} ms, ${sequential.failures} failed`);

    console.log(`(2) ${options.containers} attaches across ${NETWORKS_OF_PHASE_2} networks from ${CLIENTS} concurrent clients:`);
    const concurrent = await concurrentAttaches(planners, options);
    console.log(`  ${concurrent.perSecond.toFixed(1)} attaches/s, p50 ${ms(concurrent.p50)} ms, p99 ${ms(concurrent.p99)} ms, ${concurrent.failures} failed`);

    console.log(`(3) IPAM alone, ${options.ipamCycles} allocations from ${CLIENTS} clients (as bench:ipam):`);
    const ipamResult = await ipamRate(ipam.address, options.ipamCycles);

    console.log("(4) sizes at the end:");
    // One listing of the whole cluster: past gRPC's 4 MB message limit (some 25,000 endpoints) it is refused.
    await checkEndpoints(clients[0]!, sequential.all.length + concurrent.attached).catch((error: Error) => console.log(`  endpoints: not checked: ${error.message}`));
    for (const bucket of sizedBuckets()) {
      const largest = await largestValue(nc, bucket);
      console.log(largest ? `  ${bucket}: largest value ${(largest.bytes / 1024).toFixed(1)} KB (key ${largest.key}, of ${largest.keys} keys)` : `  ${bucket}: no such bucket (yet)`);
    }
    const rss = planners.map((p) => rssMegabytes(p.pid));
    console.log(`  planner rss: ${rss.map((m) => `${m.toFixed(0)} MB`).join(", ")}`);

    const ratio = last / first;
    const perIpam = concurrent.perSecond / ipamResult.perSecond;
    console.log(
      `scale: ${options.containers} endpoints on ${options.hosts} hosts, attach p50 ${ms(first)} ms first band, ${ms(last)} ms last band, ratio ${ratio.toFixed(2)}, ` +
        `p99 ${ms(p99)} ms, ${concurrent.perSecond.toFixed(0)} attaches/s at ${CLIENTS} clients, ipam ${ipamResult.perSecond.toFixed(0)}/s, ` +
        `attach/ipam ${perIpam.toFixed(3)}, planner rss ${Math.max(...rss).toFixed(0)} MB`,
    );
  } finally {
    stopHeartbeats();
    for (const client of clients) client.close();
    await nc.close();
  }
}

async function stopAll(running: { nats?: NatsServer; services: ServiceProcess[] }): Promise<void> {
  for (const service of running.services.reverse()) await service.stop();
  await running.nats?.stop();
}

const running: { nats?: NatsServer; services: ServiceProcess[] } = { services: [] };
// An interrupted run still takes its processes down: they would hold their ports and the NATS store.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    for (const service of running.services) process.kill(service.pid, "SIGKILL");
    void (running.nats?.stop() ?? Promise.resolve()).finally(() => process.exit(130));
  });
}

try {
  await run(parseOptions(), running);
  await stopAll(running);
  process.exit(0);
} catch (error) {
  console.error(`bench failed: ${(error as Error).message}`);
  await stopAll(running).catch(() => undefined);
  process.exit(1);
}
