// Two ipam replicas as child processes (the real `trellis ipam` entry point), many concurrent
// clients allocating and releasing, and `kill -9` of a random replica now and then. Afterwards no
// address was ever held twice and none is left behind.
// Scale: TRELLIS_IPAM_CHAOS_ALLOCATIONS (default 32,000) allocations in all, over 16 clients, with 8 kills.
import { afterAll, beforeAll, expect, it } from "vitest";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { status, type ServiceError } from "@grpc/grpc-js";
import { freePort, startNatsServer, type NatsServer } from "../support/nats-server.js";
import { connectIpam, type IpamCalls } from "../../services/ipam/client.js";
import { AddressKind } from "../../libs/proto/gen/trellis/v1/ipam.js";

const ROOT = new URL("../..", import.meta.url).pathname;
const BUILD_DIR = join(ROOT, "tmp", "ipam-chaos-build");
const CLIENTS = 16;
/** The scale: 16 clients × 2,000 allocations. */
const ALLOCATIONS = Number(process.env.TRELLIS_IPAM_CHAOS_ALLOCATIONS ?? CLIENTS * 2000);
const HELD_PER_CLIENT = 8;
const KILLS = 8;
const NETWORK = "chaos";
/** Small enough that released addresses are handed out again while others are being taken. */
const SUBNET = "10.40.0.0/23";

/** One replica: a `trellis ipam` child process on a fixed port, restartable after a kill. */
class Replica {
  private child: ChildProcess | undefined;

  constructor(
    private readonly natsUrl: string,
    readonly port: number,
  ) {}

  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const child = spawn(process.execPath, [join(BUILD_DIR, "services/cli/main.js"), "ipam", `--nats=${this.natsUrl}`, `--listen=${this.address}`, "--metrics=off"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.child = child;
    await new Promise<void>((resolve, reject) => {
      let output = "";
      const timer = setTimeout(() => reject(new Error(`ipam replica on ${this.address} did not get ready: ${output}`)), 20_000);
      const onData = (chunk: Buffer) => {
        output += chunk.toString();
        if (output.includes("ready")) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout?.on("data", onData);
      child.stderr?.on("data", onData);
      child.on("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`ipam replica exited with ${code}: ${output}`));
      });
    });
  }

  async kill(): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      child.once("exit", () => resolve());
      child.kill("SIGKILL");
    });
  }
}

let nats: NatsServer;
let replicas: Replica[] = [];

beforeAll(async () => {
  // Replicas run as real processes: compile the project once, as `npm run build` would.
  rmSync(BUILD_DIR, { recursive: true, force: true });
  try {
    execFileSync(join(ROOT, "node_modules/.bin/tsc"), ["-p", join(ROOT, "tsconfig.json"), "--outDir", BUILD_DIR], { stdio: "pipe" });
  } catch {
    // tsc still emits when another part of the tree has a type error; the replica only needs ipam's files.
  }
  nats = await startNatsServer();
  replicas = [new Replica(nats.url, await freePort()), new Replica(nats.url, await freePort())];
  await Promise.all(replicas.map((replica) => replica.start()));
}, 240_000);

afterAll(async () => {
  await Promise.all(replicas.map((replica) => replica.kill()));
  await nats?.stop();
  rmSync(BUILD_DIR, { recursive: true, force: true });
});

/** Errors a dying replica produces; anything else (a refusal) is a real failure. */
function isTransient(error: unknown): boolean {
  const code = (error as ServiceError).code;
  return [status.UNAVAILABLE, status.INTERNAL, status.ABORTED, status.DEADLINE_EXCEEDED, status.CANCELLED, status.UNKNOWN].includes(code);
}

/** Retries on the other replica until the call succeeds: every call here is idempotent. */
async function withFailover<T>(clients: IpamCalls[], first: number, call: (client: IpamCalls) => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call(clients[(first + attempt) % clients.length]!);
    } catch (error) {
      if (!isTransient(error) || attempt > 200) throw error;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

it(`never holds an address twice nor leaks one: 2 replicas, ${CLIENTS} clients, ${ALLOCATIONS} allocations, kill -9`, async () => {
  const clients = replicas.map((replica) => connectIpam(replica.address));
  await withFailover(clients, 0, (client) =>
    client.allocateSubnets({ networkId: NETWORK, withGateway: true, subnets: [{ cidr: SUBNET, gateway: "", ipv6: false }] }),
  );
  const held = new Map<string, string>();
  const live = new Set<string>();
  let duplicates = 0;
  let next = 0;
  let kills = 0;
  let running = true;

  // Kills are spread over the run by progress, not time, so that a fast run gets as many as a slow one.
  const killer = (async () => {
    for (let round = 1; round < KILLS + 1 && running; round++) {
      const due = Math.floor(((round - 0.5 + Math.random() * 0.8) * ALLOCATIONS) / (KILLS + 1));
      while (running && next < due) await new Promise((resolve) => setTimeout(resolve, 10));
      if (!running) break;
      const victim = replicas[Math.floor(Math.random() * replicas.length)]!;
      await victim.kill();
      kills++;
      await new Promise((resolve) => setTimeout(resolve, 200));
      await victim.start();
    }
  })();

  const release = async (index: number, endpointId: string, address: string) => {
    held.delete(address);
    await withFailover(clients, index, (client) => client.releaseAddresses(NETWORK, endpointId));
    live.delete(endpointId);
  };
  const runClient = async (index: number) => {
    const mine: [string, string][] = [];
    while (next < ALLOCATIONS) {
      const endpointId = `ep-${index}-${next++}`;
      live.add(endpointId);
      const { address } = await withFailover(clients, index, (client) =>
        client.allocateAddress({ networkId: NETWORK, endpointId, host: `host${index % 4}`, ipv6: false, address: "" }),
      );
      if (held.has(address)) duplicates++;
      held.set(address, endpointId);
      mine.push([endpointId, address]);
      if (mine.length > HELD_PER_CLIENT) await release(index, ...mine.shift()!);
    }
    // Half of what is held stays, to check that the bucket holds exactly the live endpoints.
    for (const [endpointId, address] of mine.splice(0, mine.length / 2)) await release(index, endpointId, address);
  };

  try {
    await Promise.all(Array.from({ length: CLIENTS }, (_, index) => runClient(index)));
  } finally {
    running = false;
    await killer;
  }

  const { allocations } = await withFailover(clients, 0, (client) => client.listAllocations(NETWORK));
  const endpoints = allocations.filter((allocation) => allocation.kind === AddressKind.ADDRESS_KIND_ENDPOINT);
  const leaked = endpoints.filter((allocation) => !live.has(allocation.endpointId));
  const addresses = endpoints.map((allocation) => allocation.address);
  for (const client of clients) client.close();

  console.log(`ipam chaos: ${ALLOCATIONS} allocations, ${kills} kill -9, ${duplicates} duplicates, ${leaked.length} leaked, ${live.size} live`);
  expect(kills).toBe(KILLS);
  expect(duplicates).toBe(0);
  expect(new Set(addresses).size).toBe(addresses.length);
  expect(leaked).toEqual([]);
  expect(endpoints).toHaveLength(live.size);
  expect(new Set(endpoints.map((allocation) => allocation.endpointId))).toEqual(live);
}, 600_000);
