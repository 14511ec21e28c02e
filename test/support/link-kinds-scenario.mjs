// Run by test/integration/link-kinds.test.ts through `ip netns exec <fresh namespace>`: nats-server, ipam,
// the planner and a link-agent, all on that namespace's loopback, so that the agent works only in the
// namespace the test made. Creates networks on every kind of parent, tries `trellis run` on each against
// the agent's host, and prints one JSON line: the agent's heartbeat, what each command said, and the
// last write of each state bucket before and after the runs. Imports the build (dist/).
import { execFileSync, spawn } from "node:child_process";
import { readdirSync } from "node:fs";

const dist = new URL("../../dist/", import.meta.url);
const load = (path) => import(new URL(path, dist).href);
const { startNatsServer } = await load("test/support/nats-server.js");
const { startIpamService } = await load("services/ipam/main.js");
const { startPlanner } = await load("services/planner/main.js");
const { startAgent } = await load("services/link-agent/main.js");
const { connectBus, openBucket } = await load("libs/bus/connection.js");
const { codecOf } = await load("libs/bus/codec.js");
const { Buckets } = await load("libs/bus/subjects.js");
const { HostRecord } = await load("libs/proto/gen/trellis/v1/state.js");

const [host] = process.argv.slice(2);
const cli = new URL("services/cli/main.js", dist).pathname;
const NETWORKS = {
  db_net: ["--subnet=192.168.1.0/24", "-o", "parent=eth0"],
  vlan_net: ["--subnet=10.20.0.0/24", "-o", "parent=eth0.20"],
  iso_net: ["--subnet=10.30.0.0/24", "--internal"],
};

// The host's own eth0, the parent it reports in its heartbeat: a veth, in the namespace the test made.
execFileSync("ip", ["link", "add", "eth0", "type", "veth", "peer", "name", "eth0p"]);
const nats = await startNatsServer();
// The test ends a scenario that hangs with SIGTERM: the server, a process of its own, goes too.
process.once("SIGTERM", () => void nats.stop().finally(() => process.exit(1)));
const ipam = await startIpamService({ natsUrl: nats.url, listen: "127.0.0.1:0", log: () => undefined });
const planner = await startPlanner({ natsUrl: nats.url, listen: "127.0.0.1:0", ipamAddress: ipam.address });
const agent = await startAgent(nats.url, { host, addresses: ["192.0.2.1"], role: "host", heartbeatMs: 1000, resyncMs: 60_000 });
const nc = await connectBus({ servers: nats.url, name: "link-kinds-test" });

/** The built `trellis`, as a user runs it. */
function trellis(...args) {
  const env = { ...process.env, TRELLIS_PLANNER_ADDR: planner.address, TRELLIS_NATS_URL: nats.url, TRELLIS_WAIT_SECONDS: "10" };
  const child = spawn(process.execPath, [cli, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk) => (stderr += chunk.toString()));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

/**
 * The last write of each bucket that holds state: any write moves it, even one that stores the same
 * bytes again. Agents write other buckets (heartbeats, statuses); the planner keeps each intent's outcome,
 * a refusal included, so that a replay answers the same.
 */
async function lastWrites() {
  const writes = {};
  for (const bucket of [Buckets.networks, Buckets.endpoints, Buckets.desired, Buckets.names, Buckets.ipam]) {
    writes[bucket] = (await (await openBucket(nc, bucket)).status()).streamInfo.state.last_seq;
  }
  return writes;
}

try {
  const entry = await (await openBucket(nc, Buckets.hosts)).get(host);
  const heartbeat = HostRecord.toJSON(codecOf(HostRecord).decode(entry.value));
  const creates = {};
  for (const [name, flags] of Object.entries(NETWORKS)) creates[name] = await trellis("network", "create", ...flags, name);
  await agent.agent.settled();
  const before = await lastWrites();
  const runs = {};
  for (const name of Object.keys(NETWORKS)) runs[name] = await trellis("run", `--net=${name}`, `--host=${host}`, `--name=c-${name}`);
  const after = await lastWrites();
  const ps = await trellis("ps");
  const namespaces = readdirSync("/run/netns").filter((name) => name.endsWith(`@${host}`));
  console.log(JSON.stringify({ heartbeat, creates, runs, before, after, ps, namespaces }));
} finally {
  await nc.close();
  await agent.stop();
  await planner.stop();
  await ipam.stop();
  await nats.stop();
}
