// Trellis IPAM against CNI host-local on one allocate/release workload, side by side in one run.
// Each client repeatedly allocates an address for a new container and releases it again. At every
// concurrency level both systems run back to back, so that they share the machine's load of the moment.
// host-local is spawned once per ADD and per DEL, as a container runtime does. Trellis IPAM runs as
// `trellis ipam` in its own process (on a real nats-server), reached over gRPC: its CPU never competes
// with the clients' in one event loop, which would make its latencies meaningless.
// Usage: node dist/bench/ipam.js [--cycles N] [--profile DIR]
//   N allocations per concurrency level and system; DIR receives the service's CPU profile (--cpu-prof).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { freePort, startNatsServer } from "../test/support/nats-server.js";
import { connectIpam, type IpamCalls } from "../services/ipam/client.js";

const HOST_LOCAL = "/usr/lib/cni/host-local";
const TRELLIS_CLI = fileURLToPath(new URL("../bundle/trellis.js", import.meta.url));
const SUBNET = "10.20.0.0/16";
const LEVELS = [1, 4, 16];
const HELD_PER_CLIENT = 8;
/** Unmeasured allocations before the first level: connections, JIT and page cache warm for both systems. */
const WARM_UP_CYCLES = 200;
const SERVICE_START_TIMEOUT_MS = 30_000;
/** Every container of the run has its own id: a reused one would measure re-creating a deleted key. */
let containerSerial = 0;

/** One system under test: allocate an address for a container, and release it. */
interface Allocator {
  name: string;
  allocate(container: string): Promise<string>;
  release(container: string): Promise<void>;
}

interface LevelResult {
  clients: number;
  allocations: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  duplicates: number;
}

interface IpamProcess {
  address: string;
  stop(): Promise<void>;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { cycles: { type: "string", default: "4000" }, profile: { type: "string" } } });
  const cycles = Number(values.cycles);
  const nats = await startNatsServer();
  const dataDir = mkdtempSync(join(tmpdir(), "trellis-bench-host-local-"));
  let ipam: IpamProcess | undefined;
  let client: IpamCalls | undefined;
  try {
    ipam = await startIpamProcess(nats.url, values.profile);
    client = connectIpam(ipam.address);
    await client.allocateSubnets({ networkId: "bench", withGateway: true, subnets: [{ cidr: SUBNET, gateway: "", ipv6: false }] });
    const systems = [trellisAllocator(client), hostLocalAllocator(dataDir)];
    for (const system of systems) await runLevel(system, 4, WARM_UP_CYCLES);
    const results = new Map<string, LevelResult[]>(systems.map((system) => [system.name, []]));
    for (const clients of LEVELS) {
      for (const system of systems) {
        const result = await runLevel(system, clients, cycles);
        printLevel(system.name, result);
        results.get(system.name)!.push(result);
      }
    }
    printSummary(results.get("trellis")!, results.get("host-local")!);
  } finally {
    client?.close();
    await ipam?.stop();
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** `trellis ipam` as an operator starts it, on a free loopback port; resolves on its `ready` line. */
async function startIpamProcess(natsUrl: string, profileDir: string | undefined): Promise<IpamProcess> {
  const listen = `127.0.0.1:${await freePort()}`;
  // Trace exporters the caller's environment may name would measure the exporter, not IPAM.
  const env = { ...process.env };
  delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete env.TRELLIS_TRACE_FILE;
  const nodeOptions = profileDir ? ["--cpu-prof", `--cpu-prof-dir=${profileDir}`] : [];
  const child = spawn(process.execPath, [...nodeOptions, TRELLIS_CLI, "ipam", `--nats=${natsUrl}`, `--listen=${listen}`], { env, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
  };
  let output = "";
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`trellis ipam printed no ready line within ${SERVICE_START_TIMEOUT_MS} ms: ${output}`)), SERVICE_START_TIMEOUT_MS);
    const onOutput = (chunk: Buffer) => {
      output += chunk.toString();
      const ready = /ipam ready on (\S+)/.exec(output);
      if (ready) {
        clearTimeout(timer);
        resolve(ready[1]!);
      }
    };
    child.stdout.on("data", onOutput);
    child.stderr.on("data", onOutput);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`trellis ipam exited with ${code} before it was ready: ${output.trim()}`));
    });
  }).catch(async (error: unknown) => {
    await stop();
    throw error;
  });
  return { address, stop };
}

/**
 * `clients` loops share `cycles` allocations; each client keeps its last HELD_PER_CLIENT containers
 * and releases the oldest one after each allocation. An address counts as held from the moment its
 * allocation returns until its release is sent; handing it to anyone else meanwhile is a duplicate.
 * Latency is the allocation's; the rate counts the releases' time too.
 */
async function runLevel(allocator: Allocator, clients: number, cycles: number): Promise<LevelResult> {
  const held = new Map<string, string>();
  const latencies: number[] = [];
  let duplicates = 0;
  let unstarted = cycles;
  const release = async (container: string, address: string) => {
    held.delete(address);
    await allocator.release(container);
  };
  const runClient = async () => {
    const mine: [string, string][] = [];
    while (unstarted > 0) {
      unstarted--;
      const container = `c${containerSerial++}`;
      const started = performance.now();
      const address = await allocator.allocate(container);
      latencies.push(performance.now() - started);
      if (held.has(address)) duplicates++;
      held.set(address, container);
      mine.push([container, address]);
      if (mine.length > HELD_PER_CLIENT) await release(...mine.shift()!);
    }
    for (const [container, address] of mine) await release(container, address);
  };
  const started = performance.now();
  await Promise.all(Array.from({ length: clients }, runClient));
  const seconds = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  return {
    clients,
    allocations: latencies.length,
    perSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 0.5),
    p99Ms: percentile(latencies, 0.99),
    duplicates,
  };
}

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

function trellisAllocator(client: IpamCalls): Allocator {
  return {
    name: "trellis",
    allocate: async (container) =>
      (await client.allocateAddress({ networkId: "bench", endpointId: container, host: "bench", ipv6: false, address: "" })).address,
    release: (container) => client.releaseAddresses("bench", container),
  };
}

function hostLocalAllocator(dataDir: string): Allocator {
  const config = JSON.stringify({
    cniVersion: "0.4.0",
    name: "bench",
    ipam: { type: "host-local", ranges: [[{ subnet: SUBNET }]], dataDir },
  });
  return {
    name: "host-local",
    allocate: async (container) => {
      const result = JSON.parse(await runHostLocal("ADD", container, config)) as { ips: { address: string }[] };
      const address = result.ips[0]?.address;
      if (!address) throw new Error(`failed to allocate with host-local: no address in its answer`);
      return address;
    },
    release: async (container) => {
      await runHostLocal("DEL", container, config);
    },
  };
}

function runHostLocal(command: "ADD" | "DEL", container: string, config: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(HOST_LOCAL, [], {
      env: { CNI_COMMAND: command, CNI_CONTAINERID: container, CNI_NETNS: `/var/run/netns/${container}`, CNI_IFNAME: "eth0", CNI_PATH: "/usr/lib/cni" },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
    child.on("error", (error) => reject(new Error(`failed to run ${HOST_LOCAL}: ${error.message}`)));
    child.on("close", (code) => (code === 0 ? resolve(output) : reject(new Error(`failed to ${command} with host-local: ${output.trim()}`))));
    child.stdin.end(config);
  });
}

function printLevel(name: string, result: LevelResult): void {
  console.log(
    `${name.padEnd(10)} clients ${String(result.clients).padStart(2)}: ${result.perSecond.toFixed(0).padStart(6)} allocations/s, ` +
      `p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, duplicates ${result.duplicates} (${result.allocations} allocations)`,
  );
}

function printSummary(trellis: LevelResult[], hostLocal: LevelResult[]): void {
  const top = (results: LevelResult[]) => results[results.length - 1]!;
  const t = top(trellis);
  const h = top(hostLocal);
  console.log(`ipam: trellis ${t.perSecond.toFixed(0)}/s, host-local ${h.perSecond.toFixed(0)}/s, ratio ${(t.perSecond / h.perSecond).toFixed(1)}, duplicates ${t.duplicates}`);
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(`bench failed: ${(error as Error).message}`);
    process.exit(1);
  },
);
