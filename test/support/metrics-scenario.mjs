// Run by test/integration/prometheus.test.ts through `ip netns exec <fresh namespace>`: nats-server, then
// `trellis ipam`, `trellis planner` and `trellis agent` as operators start them, each serving metrics on the
// namespace's loopback, and Debian's prometheus scraping them with deploy/prometheus/prometheus.yml pointed at
// those ports. Does known work through the Control API (a network, 3 attaches, 1 refused, 1 release), waits
// for a scrape that follows it, and prints one JSON line: what Prometheus's query API answers. Imports the build.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parse, stringify } from "yaml";

const root = new URL("../../", import.meta.url);
const dist = new URL("dist/", root);
const load = (path) => import(new URL(path, dist).href);
const { startNatsServer, freePort } = await load("test/support/nats-server.js");
const { startService } = await load("test/support/trellis-service.js");
const { connectBus, openBucket } = await load("libs/bus/connection.js");
const { codecOf } = await load("libs/bus/codec.js");
const { Buckets } = await load("libs/bus/subjects.js");
const { HostRecord } = await load("libs/proto/gen/trellis/v1/state.js");
const { ControlClient } = await load("libs/proto/gen/trellis/v1/control.js");
const { callUnary, clientOptions, insecure } = await load("libs/grpc/unary.js");

const [host, queriesJson] = process.argv.slice(2);
const queries = JSON.parse(queriesJson);
const OTHER_HOST = "metrics-peer";
const PARENT = "trpar0";
const cli = new URL("services/cli/main.js", dist).pathname;
const work = mkdtempSync(join(tmpdir(), "trellis-prometheus-"));
const stops = [];
const stopAll = async () => {
  for (const stop of stops.reverse()) await stop().catch(() => undefined);
  rmSync(work, { recursive: true, force: true });
};
process.once("SIGTERM", () => void stopAll().finally(() => process.exit(1)));

/** Starts a program and resolves once its output matches `ready`. */
function startProgram(command, args, ready, env = {}) {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let output = "";
  const exited = new Promise((resolve) => child.once("exit", resolve));
  stops.push(async () => {
    if (child.exitCode === null) child.kill("SIGTERM");
    await exited;
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${command} ${args[0]} was not ready within 30 s: ${output}`)), 30_000);
    const onData = (chunk) => {
      output += chunk.toString();
      if (ready.test(output)) {
        clearTimeout(timer);
        resolve(child);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("exit", (code) => reject(new Error(`${command} ${args[0]} exited with ${code}: ${output}`)));
  });
}

async function prometheus(path) {
  const response = await fetch(`http://${prometheusAddress}${path}`);
  const body = await response.json();
  if (body.status !== "success") throw new Error(`prometheus answered ${path} with ${JSON.stringify(body)}`);
  return body.data;
}

const query = async (promql) => (await prometheus(`/api/v1/query?query=${encodeURIComponent(promql)}`)).result;

let prometheusAddress;
try {
  const nats = await startNatsServer();
  stops.push(() => nats.stop());
  const ports = { planner: await freePort(), ipam: await freePort(), agent: await freePort(), prometheus: await freePort() };
  const metricsOf = (service) => `127.0.0.1:${ports[service]}`;
  const ipam = await startService("ipam", [`--nats=${nats.url}`, "--listen=127.0.0.1:0", `--metrics=${metricsOf("ipam")}`]);
  stops.push(() => ipam.stop());
  const planner = await startService("planner", [`--nats=${nats.url}`, "--listen=127.0.0.1:0", `--ipam=${ipam.address}`, `--metrics=${metricsOf("planner")}`]);
  stops.push(() => planner.stop());
  await startProgram(
    process.execPath,
    [cli, "agent", `--host=${host}`, "--address=192.0.2.1", `--nats=${nats.url}`, "--heartbeat-interval=1", `--metrics=${metricsOf("agent")}`, `--socket=${join(work, "agent.sock")}`],
    /agent ready for host/,
  );

  // The deployed configuration, its targets pointed at this test's ports and scraped every second.
  const config = parse(readFileSync(new URL("deploy/prometheus/prometheus.yml", root), "utf8"));
  config.global.scrape_interval = "1s";
  for (const job of config.scrape_configs) job.static_configs = [{ targets: [metricsOf(job.job_name.replace(/^trellis-/, ""))] }];
  writeFileSync(join(work, "prometheus.yml"), stringify(config));
  prometheusAddress = `127.0.0.1:${ports.prometheus}`;
  await startProgram(
    "prometheus",
    [`--config.file=${join(work, "prometheus.yml")}`, `--storage.tsdb.path=${join(work, "data")}`, `--web.listen-address=${prometheusAddress}`],
    /Server is ready to receive web requests/,
  );

  // Another host, by its heartbeat alone, where the containers go: the kernel here has no ipvlan, and
  // the planner would refuse them on the agent's own host.
  const nc = await connectBus({ servers: nats.url, name: "prometheus-test" });
  stops.push(() => nc.close());
  const record = HostRecord.fromPartial({ host: OTHER_HOST, address: "192.0.2.2", role: "host", heartbeatAt: new Date().toISOString(), interfaces: [PARENT], heartbeatIntervalMs: 300_000 });
  await (await openBucket(nc, Buckets.hosts)).put(OTHER_HOST, codecOf(HostRecord).encode(record));

  const control = new ControlClient(planner.address, insecure(), clientOptions);
  stops.push(async () => control.close());
  const call = (method, request) => callUnary(control[method].bind(control), { intentId: "", ...request });
  const attach = (container, onHost) => call("attachEndpoint", { spec: { network: "metrics_net", container, host: onHost, ipv4: "", ipv6: "" } });
  await call("createNetwork", { spec: { name: "metrics_net", driver: "ipvlan", subnets: ["10.77.0.0/24"], gateways: [], internal: false, ipv6: false, options: { parent: PARENT }, ipRanges: [], auxAddresses: {} } });
  for (const container of ["m1", "m2", "m3"]) await attach(container, OTHER_HOST);
  // Refused whatever the kernel: the name is taken.
  const refusal = await attach("m1", OTHER_HOST).then(
    () => "not refused",
    (error) => error.details,
  );
  await call("detachEndpoint", { container: "m2" });
  const workDone = Date.now() / 1000;

  // A scrape of every target that began after the work.
  const deadline = Date.now() + 30_000;
  for (;;) {
    const scraped = await query(`timestamp(up == 1) > ${workDone}`);
    if (scraped.length === 3) break;
    if (Date.now() > deadline) throw new Error(`no scrape of all three services after the work within 30 s: ${JSON.stringify(await query("up"))}`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  const answers = {};
  for (const [name, promql] of Object.entries(queries)) answers[name] = (await query(promql)).map(({ metric, value }) => ({ metric, value: Number(value[1]) }));
  const targets = (await prometheus("/api/v1/targets")).activeTargets.map(({ labels, health }) => ({ job: labels.job, health }));
  console.log(JSON.stringify({ refusal, answers, targets, otherHost: OTHER_HOST }));
} finally {
  await stopAll();
}
