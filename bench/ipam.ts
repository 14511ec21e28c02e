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
import { parseArgs } from "node:util";
import { startNatsServer } from "../test/support/nats-server.js";
import { startService, type ServiceProcess } from "../test/support/trellis-service.js";
import { connectIpam, type IpamCalls } from "../services/ipam/client.js";
import { printLevel, runLevel, trellisAllocator, WARM_UP_CYCLES, type Allocator, type LevelResult } from "./allocation-rate.js";

const HOST_LOCAL = "/usr/lib/cni/host-local";
const SUBNET = "10.20.0.0/16";
const LEVELS = [1, 4, 16];

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { cycles: { type: "string", default: "4000" }, profile: { type: "string" } } });
  const cycles = Number(values.cycles);
  const nats = await startNatsServer();
  const dataDir = mkdtempSync(join(tmpdir(), "trellis-bench-host-local-"));
  let ipam: ServiceProcess | undefined;
  let client: IpamCalls | undefined;
  try {
    const nodeOptions = values.profile ? ["--cpu-prof", `--cpu-prof-dir=${values.profile}`] : [];
    ipam = await startService("ipam", [`--nats=${nats.url}`, "--listen=127.0.0.1:0"], { nodeOptions });
    client = connectIpam(ipam.address);
    await client.allocateSubnets({ networkId: "bench", withGateway: true, subnets: [{ cidr: SUBNET, gateway: "", ipv6: false }] });
    const systems = [trellisAllocator(client, "bench", "bench"), hostLocalAllocator(dataDir)];
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
