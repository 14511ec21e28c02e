// Route distribution, measured on this machine's own kernel in one run:
// (a) programming rate: one announcement of M prefixes installed by a Trellis route installer into one
//     namespace, next to `ip -batch` installing the same routes into another; median of 5 rounds;
// (b) convergence: N hosts, C of them (--cluster, 100 by default) with an announcement (one granted /32) and a
//     stored heartbeat, and N installers (each its own namespace, all in this process), each believing the others'
//     routes (1,000 hosts that each load 1,000 hosts' records at once are more than one process and one server
//     take at start: a cluster loads them on 1,000 hosts);
//     then 100 announcements by one more host, each adding one prefix. The time from the KV put until each
//     namespace's kernel has the route (seen by `ip -timestamp monitor route` in each namespace), as one host
//     sees it: the process runs the N installers one after another where a cluster runs them on N hosts at once,
//     so a host's latency is the time to the first kernel (the bus's delivery and one installer's work) plus that
//     host's own gap after the kernel before it (its own work, and whatever else the process did meanwhile);
//     p50/p99 over every host and announcement. The time until the last of the N kernels (the sum of the N
//     installers' work) is printed beside it, and the slowest announcement's time to its first kernel with how much
//     of it this process's garbage collector paused: its one heap holds the N installers' state, where a host's
//     agent holds one installer's, so its pauses are not any one host's (at N = 1,000 they set the p99).
// Usage: node dist/bench/routes.js [--routes M] [--announcements K] [--levels 10,100,1000] [--cluster C]
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PerformanceObserver } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { connectBus, openBucket } from "../libs/bus/connection.js";
import { codecOf } from "../libs/bus/codec.js";
import { Buckets } from "../libs/bus/subjects.js";
import { createNamespace, deleteNamespace } from "../libs/netlink/index.js";
import { RouteAnnouncement } from "../libs/proto/gen/trellis/v1/routes.js";
import { HostRecord } from "../libs/proto/gen/trellis/v1/state.js";
import { BlockRecord } from "../libs/proto/gen/trellis/v1/ipam.js";
import { Network } from "../libs/proto/gen/trellis/v1/network.js";
import { RouteInstaller, type InstallerBuckets } from "../services/link-agent/routes/install.js";
import { startNatsServer } from "../test/support/nats-server.js";

const NETWORK = "l3net";
const ANNOUNCER = "h0";
const NEXT_HOP = "192.168.77.12";
const LEVELS = [10, 100, 1000];
const RATE_ROUNDS = 5;
const START_BATCH = 25;
/** The cluster's hosts say they heartbeat this rarely, so that their one stored heartbeat keeps them live all run. */
const CLUSTER_HEARTBEAT_INTERVAL_MS = 3_600_000;

type Buckets3 = InstallerBuckets;

const networkCodec = codecOf(Network);
const blockCodec = codecOf(BlockRecord);
const announcementCodec = codecOf(RouteAnnouncement);
const hostCodec = codecOf(HostRecord);
const namespaces: string[] = [];

/** 10.2.0.0 + i as a /32: distinct prefixes, as many as needed (up to 2^16 × 250). */
function prefix(i: number): string {
  return `10.${2 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`;
}

async function underlayNamespace(tag: string): Promise<string> {
  const name = `trb-${tag}-${randomBytes(3).toString("hex")}`;
  await createNamespace(name);
  namespaces.push(name);
  execFileSync("ip", ["-n", name, "-batch", "-"], {
    input: ["link add ul0 type veth peer name ul1", "addr add 192.168.77.1/24 dev ul0", "link set ul1 up", "link set ul0 up"].join("\n"),
  });
  return name;
}

/** The L3 network every installer has, and what IPAM gave the announcer in it: each prefix, as a borrowed address. */
async function grantToAnnouncer(buckets: Buckets3, prefixes: string[]): Promise<void> {
  const network = Network.fromPartial({ id: NETWORK, name: NETWORK, driver: "ipvlan", mode: "l3", flag: "bridge" });
  await buckets.networks.put(NETWORK, networkCodec.encode(network));
  for (const [i, cidr] of prefixes.entries()) {
    const record = { networkId: NETWORK, incarnation: "", host: ANNOUNCER, cidr, ipv6: false, borrowed: true };
    await buckets.ipam.put(`block.${NETWORK}.${i}`, blockCodec.encode(record));
  }
}

function encodeAnnouncement(prefixes: string[]): Uint8Array {
  const announcement = { host: ANNOUNCER, nextHops: [NEXT_HOP], prefixes: prefixes.map((p) => ({ networkId: NETWORK, prefix: p })), generation: 1, announcedAt: "" };
  return announcementCodec.encode(announcement);
}

async function announce(buckets: Buckets3, prefixes: string[]): Promise<void> {
  await buckets.routes.put(ANNOUNCER, encodeAnnouncement(prefixes));
}

async function heartbeat(buckets: Buckets3): Promise<void> {
  await buckets.hosts.put(ANNOUNCER, hostCodec.encode({ host: ANNOUNCER, address: NEXT_HOP, role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: 0 }));
}

function startInstaller(buckets: Buckets3, host: string, netns: string): Promise<RouteInstaller> {
  return RouteInstaller.start(buckets, { host, role: "host", netns, staleAfterMs: 10_000, resyncMs: 60_000, log: (line) => console.error(`  ${host}: ${line}`) });
}

function trellisRouteCount(netns: string): number {
  return execFileSync("ip", ["-n", netns, "route", "show", "proto", "210"], { encoding: "utf8" }).split("\n").filter(Boolean).length;
}

/** (a) Routes per second: the installer (KV put → every route in the kernel) and `ip -batch`. */
async function programmingRate(buckets: Buckets3, count: number, round: number): Promise<{ trellis: number; ipBatch: number }> {
  const prefixes = Array.from({ length: count }, (_, i) => prefix(i));
  const host = `rate${round}`;
  const trellisNs = await underlayNamespace(host);
  const installer = await startInstaller(buckets, host, trellisNs);
  // As in (b): let the start's own work (initial watch deliveries, their garbage) finish before timing.
  await new Promise((resolve) => setTimeout(resolve, 500));
  // The announcing agent's encoding is not the installer's work: the clock starts at the put.
  const announcement = encodeAnnouncement(prefixes);
  const started = performance.now();
  await buckets.routes.put(ANNOUNCER, announcement);
  while (installer.believed().size < count) await new Promise((resolve) => setImmediate(resolve));
  await installer.settled();
  const trellisSeconds = (performance.now() - started) / 1000;
  if (trellisRouteCount(trellisNs) !== count) throw new Error(`failed to install ${count} routes with trellis: ${trellisRouteCount(trellisNs)} in the kernel`);
  await installer.stop();
  // The next round's installer must not find these routes announced when it starts.
  await buckets.routes.delete(ANNOUNCER);

  const batchNs = await underlayNamespace("batch");
  const dir = mkdtempSync(join(tmpdir(), "trellis-bench-"));
  const file = join(dir, "routes.batch");
  writeFileSync(file, prefixes.map((p) => `route add ${p} via ${NEXT_HOP} proto 210`).join("\n") + "\n");
  const batchStarted = performance.now();
  execFileSync("ip", ["-n", batchNs, "-batch", file]);
  const batchSeconds = (performance.now() - batchStarted) / 1000;
  rmSync(dir, { recursive: true, force: true });
  if (trellisRouteCount(batchNs) !== count) throw new Error(`failed to install ${count} routes with ip -batch`);
  return { trellis: count / trellisSeconds, ipBatch: count / batchSeconds };
}

/** Wall-clock ms at which `ip -timestamp monitor route` in `netns` saw each added destination. */
function monitorRoutes(netns: string, seen: (dst: string, atMs: number) => void): ChildProcess {
  const child = spawn("ip", ["-n", netns, "-timestamp", "monitor", "route"], { stdio: ["ignore", "pipe", "ignore"] });
  let pending = "";
  let stamp = 0;
  child.stdout!.on("data", (chunk: Buffer) => {
    pending += chunk.toString();
    const lines = pending.split("\n");
    pending = lines.pop()!;
    for (const line of lines) {
      // "Timestamp: Sun Nov 22 21:40:01 2026 123456 usec", then the route line(s) it stamps.
      const time = /^Timestamp: (.+) (\d+) (\d+) usec$/.exec(line);
      if (time) stamp = Date.parse(`${time[1]} ${time[2]}`) + Number(time[3]) / 1000;
      else if (/^10\.\S+ via /.test(line)) seen(`${line.split(" ")[0]}/32`, stamp);
    }
  });
  return child;
}

/** 10.200.0.0 + i as a /32: the prefix of the i-th host of the cluster of (b). */
function clusterPrefix(i: number): string {
  return `10.${200 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32`;
}

/**
 * Every host of the cluster as the other agents see it: its grant, its announcement of it, and a heartbeat. Returns
 * what takes them away again, so that the next level's installers do not find this level's hosts.
 */
async function cluster(buckets: Buckets3, hosts: string[]): Promise<() => Promise<void>> {
  const put = async (host: string, i: number) => {
    const cidr = clusterPrefix(i);
    const nextHop = `192.168.77.${100 + (i % 150)}`;
    await buckets.ipam.put(`block.${NETWORK}.c${i}`, blockCodec.encode({ networkId: NETWORK, incarnation: "", host, cidr, ipv6: false, borrowed: false }));
    await buckets.routes.put(host, announcementCodec.encode({ host, nextHops: [nextHop], prefixes: [{ networkId: NETWORK, prefix: cidr }], generation: 1, announcedAt: "" }));
    const heartbeat = { host, address: nextHop, role: "host", heartbeatAt: new Date().toISOString(), missingLinkKinds: [], interfaces: [], heartbeatIntervalMs: CLUSTER_HEARTBEAT_INTERVAL_MS };
    await buckets.hosts.put(host, hostCodec.encode(heartbeat));
  };
  const remove = async (host: string, i: number) => {
    await Promise.all([buckets.ipam.delete(`block.${NETWORK}.c${i}`), buckets.routes.delete(host), buckets.hosts.delete(host)]);
  };
  const each = async (step: (host: string, i: number) => Promise<void>) => {
    for (let i = 0; i < hosts.length; i += 100) await Promise.all(hosts.slice(i, i + 100).map((host, j) => step(host, i + j)));
  };
  await each(put);
  return () => each(remove);
}

/** A host's latency for each kernel of one announcement: to the first kernel, plus its own gap after the one before it. */
function hostLatencies(kernelTimes: number[], putAt: number): number[] {
  const sorted = [...kernelTimes].sort((a, b) => a - b);
  const first = sorted[0] - putAt;
  return sorted.map((at, i) => first + (i === 0 ? 0 : at - sorted[i - 1]));
}

/**
 * The collector's pauses in this process (wall-clock start, duration), for telling how much of a latency they were: the
 * one heap holds all N installers, where a host's agent holds one, so its pauses are N times a host's.
 */
const collections: { at: number; ms: number }[] = [];
new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) collections.push({ at: performance.timeOrigin + entry.startTime, ms: entry.duration });
}).observe({ entryTypes: ["gc"] });

/** How long the collector paused this process between `from` and `to` (wall-clock ms). */
function collectedBetween(from: number, to: number): number {
  return collections.filter(({ at, ms }) => at < to && at + ms > from).reduce((sum, { at, ms }) => sum + Math.min(to, at + ms) - Math.max(from, at), 0);
}

interface Convergence {
  /** As one host sees it. */
  p50: number;
  p99: number;
  /** The slowest announcement's first kernel, and how much of it this process's collector paused. */
  slowestFirst: number;
  slowestFirstCollecting: number;
  /** Until the last of the N kernels, in this one process. */
  lastP50: number;
  lastP99: number;
}

/** (b) A cluster of N hosts with N installers; each of `announcements` puts adds one prefix; time until each kernel has it. */
async function convergence(buckets: Buckets3, agents: number, announcing: number, announcements: number, base: number): Promise<Convergence> {
  const hosts = Array.from({ length: agents }, (_, i) => `n${agents}-${i}`);
  const setUp = performance.now();
  const nets = await Promise.all(hosts.map((host) => underlayNamespace(host.replace("-", ""))));
  const removeCluster = await cluster(buckets, hosts.slice(0, announcing));
  await announce(buckets, []);
  // Started a few at a time: a thousand at once would ask the one server for four thousand watches at once,
  // which no real cluster does (each host starts its own agent) and which times out.
  const installers: RouteInstaller[] = [];
  for (let i = 0; i < hosts.length; i += START_BATCH) {
    installers.push(...(await Promise.all(hosts.slice(i, i + START_BATCH).map((host, j) => startInstaller(buckets, host, nets[i + j])))));
  }
  console.log(`(b) N=${agents}: ${agents} namespaces and installers started in ${((performance.now() - setUp) / 1000).toFixed(1)} s`);
  const arrivals = new Map<string, number[]>();
  const monitors = nets.map((netns) => monitorRoutes(netns, (dst, at) => arrivals.set(dst, [...(arrivals.get(dst) ?? []), at])));
  await new Promise((resolve) => setTimeout(resolve, 500));

  const announced: string[] = [];
  const latencies: number[] = [];
  const lasts: number[] = [];
  let slowest = { first: 0, collecting: 0 };
  for (let k = 0; k < announcements; k++) {
    const dst = prefix(base + k);
    announced.push(dst);
    const putAt = Date.now();
    await announce(buckets, announced);
    const deadline = putAt + 10_000;
    while ((arrivals.get(dst)?.length ?? 0) < agents) {
      if (Date.now() > deadline) throw new Error(`failed to converge on ${dst}: ${arrivals.get(dst)?.length ?? 0} of ${agents} kernels have it after 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    latencies.push(...hostLatencies(arrivals.get(dst)!, putAt));
    const firstAt = Math.min(...arrivals.get(dst)!);
    if (firstAt - putAt > slowest.first) slowest = { first: firstAt - putAt, collecting: collectedBetween(putAt, firstAt) };
    lasts.push(Math.max(...arrivals.get(dst)!) - putAt);
  }
  monitors.forEach((monitor) => monitor.kill());
  await Promise.all(installers.map((installer) => installer.stop()));
  await removeCluster();
  latencies.sort((a, b) => a - b);
  lasts.sort((a, b) => a - b);
  return {
    p50: percentile(latencies, 0.5),
    p99: percentile(latencies, 0.99),
    slowestFirst: slowest.first,
    slowestFirstCollecting: slowest.collecting,
    lastP50: percentile(lasts, 0.5),
    lastP99: percentile(lasts, 0.99),
  };
}

/** Where the prefixes of the level-th convergence run start: after part (a)'s, each level its own. */
function levelBase(level: number): number {
  return 100_000 * (level + 1);
}

function median(values: number[]): number {
  return percentile([...values].sort((a, b) => a - b), 0.5);
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { routes: { type: "string" }, announcements: { type: "string" }, levels: { type: "string" }, cluster: { type: "string" } } });
  const announcing = Number(values.cluster ?? 100);
  const levels = values.levels ? values.levels.split(",").map(Number) : LEVELS;
  const routeCount = Number(values.routes ?? 5000);
  const announcements = Number(values.announcements ?? 100);
  const nats = await startNatsServer();
  const nc = await connectBus({ servers: nats.url, name: "bench-routes" });
  let heartbeats: NodeJS.Timeout | undefined;
  // The heartbeat in flight: awaited before the connection closes under it.
  let beating = Promise.resolve();
  try {
    const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((b) => openBucket(nc, b)));
    const buckets = { routes, hosts, ipam, networks };
    // What IPAM gave the announcer: every prefix either part announces.
    const granted = [...Array.from({ length: routeCount }, (_, i) => prefix(i)), ...levels.flatMap((_, level) => Array.from({ length: announcements }, (_, k) => prefix(levelBase(level) + k)))];
    await grantToAnnouncer(buckets, granted);
    await heartbeat(buckets);
    heartbeats = setInterval(() => {
      beating = heartbeat(buckets).catch((error: Error) => console.error(`failed to heartbeat: ${error.message}`));
    }, 2000);

    // One burst takes tens of milliseconds, so one sample is at the mercy of the machine: take the median of several.
    const rounds: { trellis: number; ipBatch: number }[] = [];
    for (let round = 0; round < RATE_ROUNDS; round++) {
      rounds.push(await programmingRate(buckets, routeCount, round));
      console.log(`(a) ${routeCount} routes into a namespace: trellis ${rounds[round].trellis.toFixed(0)}/s, ip -batch ${rounds[round].ipBatch.toFixed(0)}/s`);
    }
    const rate = { trellis: median(rounds.map((r) => r.trellis)), ipBatch: median(rounds.map((r) => r.ipBatch)) };
    console.log(`(a) median of ${RATE_ROUNDS}: trellis ${rate.trellis.toFixed(0)}/s, ip -batch ${rate.ipBatch.toFixed(0)}/s`);
    const results = new Map<number, Convergence>();
    for (const [level, agents] of levels.entries()) {
      const result = await convergence(buckets, agents, announcing, announcements, levelBase(level));
      results.set(agents, result);
      console.log(
        `(b) N=${agents} hosts (${Math.min(announcing, agents)} announcing), ${announcements} announcements: convergence as a host sees it p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms; ` +
          `until the last of the ${agents} kernels of this process p50 ${result.lastP50.toFixed(1)} ms, p99 ${result.lastP99.toFixed(1)} ms; ` +
        `slowest first kernel ${result.slowestFirst.toFixed(1)} ms, of which this process's garbage collector ${result.slowestFirstCollecting.toFixed(1)} ms`,
      );
    }
    console.log(
      `routes: trellis ${rate.trellis.toFixed(0)}/s, ip-batch ${rate.ipBatch.toFixed(0)}/s, ratio ${(rate.trellis / rate.ipBatch).toFixed(2)}, convergence p99 ${[...results].map(([n, r]) => `N=${n} ${r.p99.toFixed(0)} ms`).join(", ")}`,
    );
  } finally {
    clearInterval(heartbeats);
    await beating;
    await nc.close();
    await nats.stop();
    for (const name of namespaces) await deleteNamespace(name).catch(() => undefined);
  }
}

// An interrupted run skips main's cleanup: take its namespaces down all the same (the kernel keeps them,
// with their veths, until someone does).
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    for (const name of namespaces) spawnSync("ip", ["netns", "delete", name], { stdio: "ignore" });
    process.exit(130);
  });
}

await main();
