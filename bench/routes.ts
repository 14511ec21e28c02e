// Route distribution, measured on this machine's own kernel in one run:
// (a) programming rate: one announcement of M prefixes installed by a Trellis route installer into one
//     namespace, next to `ip -batch` installing the same routes into another; median of 5 rounds;
// (b) convergence: N installers (each its own namespace, all in this process) and 100 announcements,
//     each adding one prefix: time from the KV put until every namespace's kernel has the route
//     (seen by `ip -timestamp monitor route` in each namespace), p50/p99.
// Usage: node dist/bench/routes.js [--routes M] [--announcements K] [--levels 10,100,1000]
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

/** (b) N installers; each of `announcements` puts adds one prefix; time until every kernel has it. */
async function convergence(buckets: Buckets3, agents: number, announcements: number, base: number): Promise<{ p50: number; p99: number }> {
  const hosts = Array.from({ length: agents }, (_, i) => `n${agents}-${i}`);
  const setUp = performance.now();
  const nets = await Promise.all(hosts.map((host) => underlayNamespace(host.replace("-", ""))));
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
    latencies.push(Math.max(...arrivals.get(dst)!) - putAt);
  }
  monitors.forEach((monitor) => monitor.kill());
  await Promise.all(installers.map((installer) => installer.stop()));
  latencies.sort((a, b) => a - b);
  return { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) };
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
  const { values } = parseArgs({ options: { routes: { type: "string" }, announcements: { type: "string" }, levels: { type: "string" } } });
  const levels = values.levels ? values.levels.split(",").map(Number) : LEVELS;
  const routeCount = Number(values.routes ?? 5000);
  const announcements = Number(values.announcements ?? 100);
  const nats = await startNatsServer();
  const nc = await connectBus({ servers: nats.url, name: "bench-routes" });
  try {
    const [routes, hosts, ipam, networks] = await Promise.all([Buckets.routes, Buckets.hosts, Buckets.ipam, Buckets.networks].map((b) => openBucket(nc, b)));
    const buckets = { routes, hosts, ipam, networks };
    // What IPAM gave the announcer: every prefix either part announces.
    const granted = [...Array.from({ length: routeCount }, (_, i) => prefix(i)), ...levels.flatMap((_, level) => Array.from({ length: announcements }, (_, k) => prefix(levelBase(level) + k)))];
    await grantToAnnouncer(buckets, granted);
    await heartbeat(buckets);
    const heartbeats = setInterval(() => heartbeat(buckets).catch((error: Error) => console.error(`failed to heartbeat: ${error.message}`)), 2000);

    // One burst takes tens of milliseconds, so one sample is at the mercy of the machine: take the median of several.
    const rounds: { trellis: number; ipBatch: number }[] = [];
    for (let round = 0; round < RATE_ROUNDS; round++) {
      rounds.push(await programmingRate(buckets, routeCount, round));
      console.log(`(a) ${routeCount} routes into a namespace: trellis ${rounds[round].trellis.toFixed(0)}/s, ip -batch ${rounds[round].ipBatch.toFixed(0)}/s`);
    }
    const rate = { trellis: median(rounds.map((r) => r.trellis)), ipBatch: median(rounds.map((r) => r.ipBatch)) };
    console.log(`(a) median of ${RATE_ROUNDS}: trellis ${rate.trellis.toFixed(0)}/s, ip -batch ${rate.ipBatch.toFixed(0)}/s`);
    const results = new Map<number, { p50: number; p99: number }>();
    for (const [level, agents] of levels.entries()) {
      const result = await convergence(buckets, agents, announcements, levelBase(level));
      results.set(agents, result);
      console.log(`(b) N=${agents} installers, ${announcements} announcements: convergence p50 ${result.p50.toFixed(1)} ms, p99 ${result.p99.toFixed(1)} ms`);
    }
    clearInterval(heartbeats);
    console.log(
      `routes: trellis ${rate.trellis.toFixed(0)}/s, ip-batch ${rate.ipBatch.toFixed(0)}/s, ratio ${(rate.trellis / rate.ipBatch).toFixed(2)}, convergence p99 ${[...results].map(([n, r]) => `N=${n} ${r.p99.toFixed(0)} ms`).join(", ")}`,
    );
  } finally {
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
