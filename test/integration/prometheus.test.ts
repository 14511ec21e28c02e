import { execFileSync, spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// Debian's prometheus scrapes `trellis ipam`, `trellis planner` and `trellis agent`, configured by
// deploy/prometheus/prometheus.yml (its targets pointed at the test's ports), after known work: one network, three
// attaches, one refused (its name taken), one release. What Prometheus's query API answers must say exactly that.
// Everything runs inside a namespace made here (the agent works only there) and removed after.

const inner = new URL("../support/metrics-scenario.mjs", import.meta.url).pathname;
const host = `metrics${process.pid}`;
const namespace = `trellis-test-${host}`;

const QUERIES = {
  intents: "trellis_planner_intents_total",
  intentDurations: "trellis_planner_intent_duration_seconds_count",
  containers: "trellis_planner_containers",
  containerStates: "trellis_planner_container_states",
  networks: "trellis_planner_networks",
  hosts: "trellis_planner_hosts",
  allocations: "trellis_ipam_allocations_total",
  allocationDurations: "trellis_ipam_allocation_duration_seconds_count",
  releases: "trellis_ipam_releases_total",
  used: "trellis_ipam_addresses_used",
  usable: "trellis_ipam_addresses_usable",
  passes: 'trellis_agent_convergence_passes_total{step="full",outcome="ok"}',
  linkLists: 'trellis_agent_netlink_operations_total{operation="link.list"}',
  agentContainers: "trellis_agent_containers",
  heartbeatAges: "trellis_agent_heartbeat_age_seconds",
  natsConnected: "trellis_nats_connected",
  residentMemory: "process_resident_memory_bytes",
};

interface Sample {
  metric: Record<string, string>;
  value: number;
}
interface Outcome {
  refusal: string;
  answers: Record<keyof typeof QUERIES, Sample[]>;
  targets: { job: string; health: string }[];
  otherHost: string;
}

/** Samples as `label=value,... → value`, without the labels every series carries (job, instance, __name__). */
function table(samples: Sample[]): Record<string, number> {
  const rows: Record<string, number> = {};
  for (const { metric, value } of samples) {
    const labels = Object.entries(metric)
      .filter(([name]) => !["job", "instance", "__name__"].includes(name))
      .map(([name, label]) => `${name}=${label}`)
      .sort()
      .join(",");
    rows[`${metric.job ?? ""}${labels ? ` ${labels}` : ""}`] = value;
  }
  return rows;
}

let outcome: Outcome;

beforeAll(async () => {
  execFileSync("ip", ["netns", "add", namespace]);
  execFileSync("ip", ["-n", namespace, "link", "set", "lo", "up"]);
  const child = spawn("ip", ["netns", "exec", namespace, process.execPath, inner, host, JSON.stringify(QUERIES)], { stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
  if (code !== 0) throw new Error(`the prometheus scenario failed (exit ${code}):\n${stderr}${stdout}`);
  outcome = JSON.parse(stdout.trim().split("\n").at(-1)!) as Outcome;
}, 120_000);

afterAll(() => {
  execFileSync("ip", ["netns", "del", namespace]);
});

describe("metrics scraped by a real Prometheus", () => {
  it("scrapes every service that deploy/prometheus/prometheus.yml names, all up", () => {
    expect(outcome.targets.sort((a, b) => a.job.localeCompare(b.job))).toEqual([
      { job: "trellis-agent", health: "up" },
      { job: "trellis-ipam", health: "up" },
      { job: "trellis-planner", health: "up" },
    ]);
  });

  it("counts the planner's intents by kind and outcome: 1 network, 3 attaches, 1 refused, 1 release", () => {
    expect(outcome.refusal).toMatch(/m1/);
    const expected = {
      "trellis-planner kind=create_network,outcome=ok": 1,
      "trellis-planner kind=attach,outcome=ok": 3,
      "trellis-planner kind=attach,outcome=refused": 1,
      "trellis-planner kind=detach,outcome=ok": 1,
    };
    expect(table(outcome.answers.intents)).toEqual(expected);
    expect(table(outcome.answers.intentDurations)).toEqual(expected);
  });

  it("reports the planner's view: one network with the two containers left, and both hosts live", () => {
    expect(table(outcome.answers.networks)).toEqual({ "trellis-planner": 1 });
    expect(table(outcome.answers.containers)).toEqual({ "trellis-planner network=metrics_net": 2 });
    // Their host has no agent to report them.
    expect(table(outcome.answers.containerStates)).toEqual({
      "trellis-planner network=metrics_net,state=failed": 0,
      "trellis-planner network=metrics_net,state=pending": 0,
      "trellis-planner network=metrics_net,state=ready": 0,
    });
    expect(table(outcome.answers.hosts)).toEqual({ "trellis-planner state=live": 2, "trellis-planner state=stale": 0 });
  });

  it("counts IPAM's allocations and releases, and the pool's use: gateway and two containers of 254", () => {
    expect(table(outcome.answers.allocations)).toEqual({ "trellis-ipam outcome=ok": 3 });
    expect(table(outcome.answers.allocationDurations)).toEqual({ "trellis-ipam outcome=ok": 3 });
    expect(table(outcome.answers.releases)).toEqual({ "trellis-ipam outcome=ok": 1 });
    const [used] = outcome.answers.used;
    expect(used?.metric.subnet).toBe("10.77.0.0/24");
    expect(table(outcome.answers.used)).toEqual({ [`trellis-ipam network_id=${used!.metric.network_id},subnet=10.77.0.0/24`]: 3 });
    expect(table(outcome.answers.usable)).toEqual({ [`trellis-ipam network_id=${used!.metric.network_id},subnet=10.77.0.0/24`]: 254 });
  });

  it("reports the agent's passes, its host's containers (none placed there) and the other host's heartbeat age", () => {
    expect(outcome.answers.passes[0]!.value).toBeGreaterThanOrEqual(1);
    // Every pass and heartbeat lists the host's links.
    expect(outcome.answers.linkLists.map(({ metric }) => metric.result)).toEqual(["ok"]);
    expect(outcome.answers.linkLists[0]!.value).toBeGreaterThanOrEqual(outcome.answers.passes[0]!.value);
    expect(table(outcome.answers.agentContainers)).toEqual({ "trellis-agent state=failed": 0, "trellis-agent state=pending": 0, "trellis-agent state=ready": 0 });
    const ages = outcome.answers.heartbeatAges;
    expect(ages.map(({ metric }) => metric.peer)).toEqual([outcome.otherHost]);
    expect(ages[0]!.value).toBeGreaterThanOrEqual(0);
    expect(ages[0]!.value).toBeLessThan(60);
  });

  it("reports every service's NATS connection up, and the runtime's own metrics", () => {
    expect(table(outcome.answers.natsConnected)).toEqual({ "trellis-agent": 1, "trellis-ipam": 1, "trellis-planner": 1 });
    expect(outcome.answers.residentMemory.map(({ metric }) => metric.job).sort()).toEqual(["trellis-agent", "trellis-ipam", "trellis-planner"]);
  });
});
