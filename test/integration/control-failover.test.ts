import { status } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { getValue } from "../../libs/bus/kv.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { ControlApi, ControlRefusedError, PlannerUnreachableError } from "../../libs/control-client/index.js";
import { AddressRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { HostRecord, IntentResult } from "../../libs/proto/gen/trellis/v1/state.js";
import { networkAddressesFilter } from "../../services/ipam/keys.js";
import { startCuttingProxy } from "../support/cutting-proxy.js";
import { freePort, startNatsServer, type NatsServer } from "../support/nats-server.js";
import { runTrellis } from "../support/trellis-cli.js";
import { startService, type ServiceProcess } from "../support/trellis-service.js";

// "A failover is a delay, not an error": the CLI and the client module (libs/control-client) against real
// `trellis ipam` and `trellis planner` processes on a real nats-server, with planners stopped, killed and
// started again under them, and one answer lost on the wire.

let nats: NatsServer;
let nc: NatsConnection;
let ipam: ServiceProcess;
let planner: ServiceProcess;
let plannerAddress: string;
/** Nothing listens here. */
let dead: string;
let networkId: string;

const startPlanner = () => startService("planner", [`--nats=${nats.url}`, `--listen=${plannerAddress}`, `--ipam=${ipam.address}`]);
const trellis = (plannerAddr: string, ...args: string[]) => runTrellis({ TRELLIS_PLANNER_ADDR: plannerAddr, TRELLIS_NATS_URL: nats.url }, ...args);
const unreachable = (where: string) =>
  `Error: failed to reach the planner at ${where}: connection refused; start it (trellis planner), or set TRELLIS_PLANNER_ADDR to where it runs\n`;

async function timed<T>(run: () => Promise<T>): Promise<{ result: T; ms: number }> {
  const started = performance.now();
  const result = await run();
  return { result, ms: performance.now() - started };
}

/** The endpoint ids that hold an address of the network in the IPAM bucket, one entry per address. */
async function addressHolders(): Promise<string[]> {
  const kv = await openBucket(nc, Buckets.ipam);
  const holders: string[] = [];
  for await (const key of await kv.keys(networkAddressesFilter(networkId))) {
    const record = (await getValue(kv, codecOf(AddressRecord), key))?.value;
    if (record?.endpointId) holders.push(record.endpointId);
  }
  return holders.sort();
}

beforeAll(async () => {
  nats = await startNatsServer();
  nc = await connectBus({ servers: nats.url, name: "control-failover-test" });
  ipam = await startService("ipam", [`--nats=${nats.url}`, "--listen=127.0.0.1:0"]);
  plannerAddress = `127.0.0.1:${await freePort()}`;
  planner = await startPlanner();
  dead = `127.0.0.1:${await freePort()}`;
  const record = HostRecord.fromPartial({ host: "h1", address: "192.168.1.11", role: "host", heartbeatAt: new Date().toISOString() });
  await (await openBucket(nc, Buckets.hosts)).put("h1", codecOf(HostRecord).encode(record));
  const control = new ControlApi({ addresses: plannerAddress });
  try {
    networkId = (await control.createNetwork({ name: "fo_net", driver: "ipvlan", subnets: ["10.91.0.0/24"], gateways: [], internal: false, ipv6: false, options: { parent: "eth0" }, ipRanges: [], auxAddresses: {} })).id;
  } finally {
    control.close();
  }
}, 60_000);

afterAll(async () => {
  await planner?.stop();
  await ipam?.stop();
  await nc?.close();
  await nats?.stop();
});

describe("with no planner anywhere, the CLI says so at once", () => {
  it.each([
    ["network", "ls"],
    ["ps"],
    ["run", "--net=fo_net", "--name=x", "--host=h1"],
    ["network", "create", "--subnet=10.92.0.0/24", "nowhere"],
  ])("trellis %s ...: which address it tried and what to do, exit status 1", async (...args) => {
    const { result, ms } = await timed(() => trellis(dead, ...args));
    expect(result).toEqual({ code: 1, stdout: "", stderr: unreachable(dead) });
    // Well below the 30 s that a failover may take: nothing was waited for.
    expect(ms).toBeLessThan(5_000);
  });

  it("naming every address it tried", async () => {
    const other = `127.0.0.1:${await freePort()}`;
    expect(await trellis(`${dead},${other}`, "network", "ls")).toEqual({ code: 1, stdout: "", stderr: unreachable(`${dead}, ${other}`) });
  });

  it("and the same for NATS", async () => {
    const nowhere = `nats://127.0.0.1:${await freePort()}`;
    const { result, ms } = await timed(() => runTrellis({ TRELLIS_NATS_URL: nowhere }, "nats", "replicas", "1"));
    expect(result).toEqual({
      code: 1,
      stdout: "",
      stderr: `Error: failed to reach NATS at ${nowhere}: connection refused; start nats-server, or set TRELLIS_NATS_URL (or --nats) to where it runs\n`,
    });
    expect(ms).toBeLessThan(5_000);
  });
});

describe("a service a command needs that is not there", () => {
  it("IPAM, behind a planner: said at the command's first retry, and again at its deadline, changing nothing", async () => {
    const lonely = await startService("planner", [`--nats=${nats.url}`, "--listen=127.0.0.1:0", `--ipam=${dead}`]);
    try {
      const result = await trellis(lonely.address, "network", "create", "--timeout=2", "--subnet=10.95.0.0/24", "no_ipam");
      const cause = `the planner at ${lonely.address}: failed to reach IPAM at ${dead}: connection refused; start it (trellis ipam), or give the planner its address (trellis planner --ipam=HOST:PORT, or TRELLIS_IPAM_ADDR)`;
      expect(result).toEqual({
        code: 1,
        stdout: "",
        stderr: `Note: ${cause}; retrying for up to 2 s (--timeout=SECONDS)\nError: gave up after 2 s of retries: ${cause}\n`,
      });
      expect((await trellis(plannerAddress, "network", "ls")).stdout).not.toContain("no_ipam");
    } finally {
      await lonely.stop();
    }
  });

  it("NATS, for a service started before it: it says what it waits for, and starts once NATS is there", async () => {
    const port = await freePort();
    const url = `nats://127.0.0.1:${port}`;
    const starting = startService("ipam", [`--nats=${url}`, "--listen=127.0.0.1:0"]);
    starting.catch(() => undefined);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const late = await startNatsServer({ port });
    try {
      const service = await starting;
      expect(service.startOutput).toContain(
        `failed to reach NATS at ${url}: connection refused; start nats-server, or set TRELLIS_NATS_URL (or --nats) to where it runs; waiting for it\n`,
      );
      await service.stop();
    } finally {
      await late.stop();
    }
  });
});

describe("several planner addresses", () => {
  it("work when the first is dead: create, ls, inspect, rm, without a word about it", async () => {
    const both = `${dead},${plannerAddress}`;
    const created = await trellis(both, "network", "create", "--subnet=10.93.0.0/24", "two_addr");
    expect(created).toMatchObject({ code: 0, stdout: expect.stringMatching(/^[0-9a-f]+\n$/), stderr: "" });
    expect(await trellis(both, "network", "ls")).toMatchObject({ code: 0, stdout: expect.stringContaining("two_addr"), stderr: "" });
    expect(JSON.parse((await trellis(both, "network", "inspect", "two_addr")).stdout)[0]).toMatchObject({ name: "two_addr" });
    expect(await trellis(both, "network", "rm", "two_addr")).toEqual({ code: 0, stdout: "two_addr\n", stderr: "" });
  });
});

describe("a planner that goes away and comes back", () => {
  it("is waited for by a command given --timeout: it succeeds after the pause, and did its work once", async () => {
    await planner.stop();
    const started = performance.now();
    const command = trellis(plannerAddress, "network", "create", "--timeout=30", "--subnet=10.94.0.0/24", "came_back");
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    planner = await startPlanner();
    const result = await command;
    expect(performance.now() - started).toBeGreaterThan(1_500);
    expect(result).toMatchObject({ code: 0, stdout: expect.stringMatching(/^[0-9a-f]+\n$/) });
    expect(result.stderr).toBe(
      `Note: failed to reach the planner at ${plannerAddress}: connection refused; start it (trellis planner), or set TRELLIS_PLANNER_ADDR to where it runs; retrying for up to 30 s (--timeout=SECONDS)\n`,
    );
    const listed = (await trellis(plannerAddress, "network", "ls")).stdout.split("\n").filter((line) => line.includes("came_back"));
    expect(listed).toHaveLength(1);
    expect((await trellis(plannerAddress, "network", "rm", "came_back")).code).toBe(0);
  }, 60_000);

  it("killed (SIGKILL) with an attach in flight, then started again: the attach succeeds after the pause, one container exists", async () => {
    const control = new ControlApi({ addresses: plannerAddress });
    try {
      // Stopped, the planner's kernel still accepts the connection: the call is in flight when it dies.
      process.kill(planner.pid, "SIGSTOP");
      const attaching = timed(() => control.attachEndpoint({ network: "fo_net", container: "survivor", host: "h1", ipv4: "", ipv6: "" }));
      await new Promise((resolve) => setTimeout(resolve, 500));
      await planner.kill();
      planner = await startPlanner();
      const { result: endpoint, ms } = await attaching;
      expect(ms).toBeGreaterThan(500);
      expect(endpoint).toMatchObject({ container: "survivor", host: "h1", addresses: [expect.stringMatching(/^10\.91\.0\.\d+\/24$/)] });

      const ps = await trellis(plannerAddress, "ps", "--net=fo_net");
      expect(ps.stdout.split("\n").filter((line) => line.startsWith("survivor "))).toEqual([expect.stringContaining(endpoint.addresses[0]!)]);
      expect(await addressHolders()).toEqual([endpoint.id]);
      await control.detachEndpoint("survivor");
    } finally {
      control.close();
    }
  }, 60_000);
});

describe("a retry", () => {
  it("carries the same intent id: when the answer to an applied attach is lost, the retry is answered with it, not applied again", async () => {
    const intentId = `intent-cut-${Date.now()}`;
    const proxy = await startCuttingProxy(plannerAddress, intentId, 500);
    const control = new ControlApi({ addresses: [proxy.address, plannerAddress] });
    try {
      const endpoint = await control.attachEndpoint({ network: "fo_net", container: "answered_once", host: "h1", ipv4: "", ipv6: "" }, { intentId });
      expect(proxy.cuts()).toBe(1);
      const recorded = await getValue(await openBucket(nc, Buckets.intents), codecOf(IntentResult), intentId);
      expect(recorded?.value.endpoint).toEqual(endpoint);
      expect((await control.listEndpoints("fo_net")).filter((e) => e.container === "answered_once").map((e) => e.id)).toEqual([endpoint.id]);
      expect(await addressHolders()).toEqual([endpoint.id]);
      // What a retry with a new id would have met:
      await expect(control.attachEndpoint({ network: "fo_net", container: "answered_once", host: "h1", ipv4: "", ipv6: "" })).rejects.toMatchObject({
        code: status.ALREADY_EXISTS,
        details: expect.stringContaining('container name "answered_once" is already in use'),
      });
      await control.detachEndpoint("answered_once");
    } finally {
      control.close();
      await proxy.stop();
    }
  }, 60_000);

  it("is not made on a refusal, which comes as a ControlRefusedError with the planner's status", async () => {
    const control = new ControlApi({ addresses: plannerAddress });
    try {
      const { result: error } = await timed(() => control.attachEndpoint({ network: "nonet", container: "x", host: "h1", ipv4: "", ipv6: "" }).catch((e: unknown) => e));
      expect(error).toBeInstanceOf(ControlRefusedError);
      expect(error).toMatchObject({ code: status.NOT_FOUND, details: "network nonet not found: create it with trellis network create, or see trellis network ls" });
    } finally {
      control.close();
    }
  });

  it("is not made when no planner answers on the first round: PlannerUnreachableError names each address", async () => {
    const control = new ControlApi({ addresses: [dead, "nosuchhost.invalid:7710"] });
    try {
      const error = await control.listNetworks().catch((e: unknown) => e);
      expect(error).toBeInstanceOf(PlannerUnreachableError);
      expect((error as PlannerUnreachableError).failures).toEqual(new Map([[dead, "connection refused"], ["nosuchhost.invalid:7710", "no such host"]]));
    } finally {
      control.close();
    }
  });
});
