// Trellis IPAM against CNI host-local on one allocate/release workload, side by side in one run.
// Each client repeatedly allocates an address for a new container and releases it again.
// Usage: node dist/bench/ipam.js [--cycles N]  (N allocations per concurrency level and system)
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startNatsServer } from "../test/support/nats-server.js";
import { startIpamService } from "../services/ipam/main.js";
import { connectIpam, type IpamCalls } from "../services/ipam/client.js";

const HOST_LOCAL = "/usr/lib/cni/host-local";
const SUBNET = "10.20.0.0/16";
const LEVELS = [1, 4, 16];
const HELD_PER_CLIENT = 8;

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

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { cycles: { type: "string", default: "1600" } } });
  const cycles = Number(values.cycles);
  const nats = await startNatsServer();
  const ipam = await startIpamService({ natsUrl: nats.url, listen: "127.0.0.1:0", log: () => {} });
  const client = connectIpam(ipam.address);
  const dataDir = mkdtempSync(join(tmpdir(), "trellis-bench-host-local-"));
  try {
    await client.allocateSubnets({ networkId: "bench", withGateway: true, subnets: [{ cidr: SUBNET, gateway: "", ipv6: false }] });
    const trellis = await runLevels(trellisAllocator(client), cycles);
    const hostLocal = await runLevels(hostLocalAllocator(dataDir), cycles);
    printSummary(trellis, hostLocal);
  } finally {
    client.close();
    await ipam.stop();
    await nats.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

async function runLevels(allocator: Allocator, cycles: number): Promise<LevelResult[]> {
  const results: LevelResult[] = [];
  for (const clients of LEVELS) {
    const result = await runLevel(allocator, clients, cycles);
    console.log(
      `${allocator.name.padEnd(10)} clients ${String(clients).padStart(2)}: ${result.perSecond.toFixed(0).padStart(6)} allocations/s, ` +
        `p50 ${result.p50Ms.toFixed(2)} ms, p99 ${result.p99Ms.toFixed(2)} ms, duplicates ${result.duplicates} (${result.allocations} allocations)`,
    );
    results.push(result);
  }
  return results;
}

/**
 * `clients` loops share `cycles` allocations; each client keeps its last HELD_PER_CLIENT containers
 * and releases the oldest one after each allocation. An address counts as held from the moment its
 * allocation returns until its release is sent; handing it to anyone else meanwhile is a duplicate.
 */
async function runLevel(allocator: Allocator, clients: number, cycles: number): Promise<LevelResult> {
  const held = new Map<string, string>();
  const latencies: number[] = [];
  let duplicates = 0;
  let next = 0;
  const release = async (container: string, address: string) => {
    held.delete(address);
    await allocator.release(container);
  };
  const runClient = async (clientIndex: number) => {
    const mine: [string, string][] = [];
    while (next < cycles) {
      const container = `c${clients}-${clientIndex}-${next++}`;
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
  await Promise.all(Array.from({ length: clients }, (_, i) => runClient(i)));
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
