// Run by test/integration/no-ipvlan.test.ts through `ip netns exec <fresh namespace>`: nats-server on
// that namespace's loopback, a veth pair as the parent, and a link-agent in this process, so that the
// agent (route installer included) works only in the namespace the test made. Imports the build (dist/).
// Prints one JSON line: the endpoint's status, and whether its namespace was removed with it.
import { execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const dist = new URL("../../dist/", import.meta.url);
const { connectBus, openBucket } = await import(new URL("libs/bus/connection.js", dist).href);
const { codecOf } = await import(new URL("libs/bus/codec.js", dist).href);
const { Buckets, desiredKey, statusKey } = await import(new URL("libs/bus/subjects.js", dist).href);
const { EndpointStatus, EndpointState } = await import(new URL("libs/proto/gen/trellis/v1/state.js", dist).href);
const { Endpoint, Network, ParentKind } = await import(new URL("libs/proto/gen/trellis/v1/network.js", dist).href);
const { startAgent } = await import(new URL("services/link-agent/main.js", dist).href);

const [host, port] = process.argv.slice(2);
const PARENT = "trparent0";
const store = mkdtempSync(join(tmpdir(), "trellis-noipvlan-"));
const nats = spawn("nats-server", ["-a", "127.0.0.1", "-p", port, "-js", "-sd", store], { stdio: ["ignore", "ignore", "pipe"] });
// If a step throws, the server and its store go with the script all the same.
process.on("exit", () => {
  nats.kill("SIGKILL");
  rmSync(store, { recursive: true, force: true });
});
await new Promise((resolve, reject) => {
  let log = "";
  nats.on("error", reject);
  nats.stderr.on("data", (chunk) => {
    log += chunk.toString();
    if (log.includes("Server is ready")) resolve();
  });
});

execFileSync("ip", ["link", "add", PARENT, "type", "veth", "peer", "name", `${PARENT}p`]);
execFileSync("ip", ["link", "set", PARENT, "up"]);

const network = {
  id: "noipvlan0000000000000000000000000",
  name: "db_net",
  driver: "ipvlan",
  mode: "l2",
  flag: "bridge",
  parent: { name: PARENT, kind: ParentKind.PARENT_KIND_EXISTING, base: "", vlanId: 0 },
  subnets: [{ cidr: "192.168.1.0/24", gateway: "192.168.1.1", ipv6: false }],
  internal: false,
  ipv6: false,
  notes: [],
  createdAt: "",
  traceparent: "",
};
const endpoint = {
  id: "ep0000000000000000000000000000001",
  networkId: network.id,
  networkName: network.name,
  container: "ipv1",
  host,
  netns: `ipv1@${host}`,
  ifname: "eth0",
  addresses: ["192.168.1.2/24"],
  routes: [{ dst: "default", via: "192.168.1.1", ipv6: false }],
  createdAt: "",
  traceparent: "",
};

const nc = await connectBus({ servers: `nats://127.0.0.1:${port}`, name: "no-ipvlan-test" });
const desired = await openBucket(nc, Buckets.desired);
const statuses = await openBucket(nc, Buckets.status);
await (await openBucket(nc, Buckets.networks)).put(network.name, codecOf(Network).encode(Network.fromPartial(network)));
// The planner's writes for the host: the network (above) and the endpoint's key, or none.
const desire = (endpoints) =>
  endpoints.length > 0
    ? desired.put(desiredKey(host, endpoint.id), codecOf(Endpoint).encode(Endpoint.fromPartial(endpoint)))
    : desired.delete(desiredKey(host, endpoint.id));
await desire([endpoint]);
const running = await startAgent(`nats://127.0.0.1:${port}`, { host, addresses: ["192.0.2.1"], role: "host", heartbeatMs: 1000, resyncMs: 100 });
await running.agent.settled();
// Several resync passes, to show that the failure is reported once, not on every pass.
await new Promise((resolve) => setTimeout(resolve, 1000));
await running.agent.settled();
const entry = await statuses.get(statusKey(host, endpoint.id));
const status = entry?.operation === "PUT" ? EndpointStatus.toJSON(codecOf(EndpointStatus).decode(entry.value)) : undefined;
const failed = entry?.operation === "PUT" && codecOf(EndpointStatus).decode(entry.value).state === EndpointState.ENDPOINT_STATE_FAILED;
// The bucket is new and this is its only key, so the revision (the bucket's sequence) counts its writes.
const statusWrites = entry?.revision;

await desire([]);
await running.agent.settled();
const namespaceLeft = existsSync(`/run/netns/${endpoint.netns}`);

await running.stop();
await nc.close();
nats.kill("SIGTERM");
await new Promise((resolve) => nats.on("exit", resolve));
console.log(JSON.stringify({ status, failed, statusWrites, namespaceLeft }));
