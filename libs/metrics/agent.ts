import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { EndpointState, type EndpointStatus } from "../proto/gen/trellis/v1/state.js";
import { serviceRegistry } from "./endpoint.js";
import { measured } from "./outcome.js";

// The link-agent's metrics. One agent runs per process (and per host), and what they count happens all over its
// modules (netlink calls, route passes, DNS answers): so they are one set per process, in this module, and the
// agent's code reports through the small functions below.

/** The agent process's registry: these metrics, its NATS connection's, and the runtime's. */
export const agentRegistry: Registry = serviceRegistry();

/** Seconds: a pass that finds everything right takes milliseconds, one that creates containers longer. */
const PASS_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const NETLINK_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5];

const passes = new Counter({ name: "trellis_agent_convergence_passes_total", help: "Convergence steps run, by step (full, parent, container, shim, announce) and outcome (ok, error)", labelNames: ["step", "outcome"], registers: [agentRegistry] });
const passSeconds = new Histogram({ name: "trellis_agent_convergence_duration_seconds", help: "How long a convergence step took, by step", labelNames: ["step"], buckets: PASS_BUCKETS, registers: [agentRegistry] });
const containers = new Gauge({ name: "trellis_agent_containers", help: "This host's containers by state, as last read back from the kernel", labelNames: ["state"], registers: [agentRegistry] });
const netlinkOperations = new Counter({ name: "trellis_agent_netlink_operations_total", help: "Netlink operations, by operation and result (ok, or the errno)", labelNames: ["operation", "result"], registers: [agentRegistry] });
const netlinkSeconds = new Histogram({ name: "trellis_agent_netlink_operation_duration_seconds", help: "How long a netlink operation took, by operation", labelNames: ["operation"], buckets: NETLINK_BUCKETS, registers: [agentRegistry] });
const routeChanges = new Counter({ name: "trellis_agent_route_changes_total", help: "Routes to other hosts' prefixes installed (add, replace) or withdrawn (delete) in the kernel", labelNames: ["change"], registers: [agentRegistry] });
const routesInstalled = new Gauge({ name: "trellis_agent_routes_installed", help: "Routes to other hosts' prefixes the agent holds installed", registers: [agentRegistry] });
const refusedAnnouncements = new Gauge({ name: "trellis_agent_refused_announcements", help: "Prefixes other hosts announce that the agent refuses to route (not theirs to announce: forged or stale)", registers: [agentRegistry] });
const announcedPrefixes = new Gauge({ name: "trellis_agent_announced_prefixes", help: "Prefixes this host announces for its L3 containers", registers: [agentRegistry] });
const dnsQueries = new Counter({ name: "trellis_agent_dns_queries_total", help: "DNS queries the agent's DNS server answered, by source (local, forwarded) and the answer's rcode", labelNames: ["source", "rcode"], registers: [agentRegistry] });

const STATE_LABELS: Record<number, string> = {
  [EndpointState.ENDPOINT_STATE_PENDING]: "pending",
  [EndpointState.ENDPOINT_STATE_READY]: "ready",
  [EndpointState.ENDPOINT_STATE_FAILED]: "failed",
};
for (const state of Object.values(STATE_LABELS)) containers.set({ state }, 0);
for (const change of ["installed", "withdrawn"]) routeChanges.inc({ change }, 0);

/** The agent's convergence steps (services/link-agent/agent.ts): a bounded label. */
export type ConvergenceStep = "full" | "parent" | "container" | "shim" | "announce";

/** Runs one convergence step, counting it and its duration. */
export function measuredStep(step: ConvergenceStep, work: () => Promise<void>): Promise<void> {
  return measured(work, (outcome, seconds) => {
    passes.inc({ step, outcome: outcome === "ok" ? "ok" : "error" });
    passSeconds.observe({ step }, seconds);
  });
}

/** One container's status changed (undefined: it had none, or has none any more): the host's containers by state. */
export function containerStateChanged(before: EndpointStatus | undefined, after: EndpointStatus | undefined): void {
  if (before) containers.dec({ state: STATE_LABELS[before.state] ?? "pending" });
  if (after) containers.inc({ state: STATE_LABELS[after.state] ?? "pending" });
}

/** Runs one netlink operation (its span's name, e.g. link.create), counting it by result, and timing it. */
export async function measuredNetlink<T>(operation: string, call: () => Promise<T>): Promise<T> {
  const started = process.hrtime.bigint();
  try {
    const result = await call();
    netlinkOperations.inc({ operation, result: "ok" });
    return result;
  } catch (error) {
    // Errno names are a small, fixed set: a bounded label that tells EEXIST from EPERM.
    netlinkOperations.inc({ operation, result: (error as NodeJS.ErrnoException).code ?? "error" });
    throw error;
  } finally {
    netlinkSeconds.observe({ operation }, Number(process.hrtime.bigint() - started) / 1e9);
  }
}

/** A batch of route changes the kernel was given, less those it refused. */
export function countRouteChanges(changes: readonly { action: "add" | "replace" | "delete" }[], refused: number): void {
  const withdrawn = changes.filter((change) => change.action === "delete").length;
  // Refusals are few and mostly deletes of routes already gone; counting them against installs errs low.
  routeChanges.inc({ change: "installed" }, Math.max(0, changes.length - withdrawn - refused));
  routeChanges.inc({ change: "withdrawn" }, withdrawn);
}

/** What the route installer believes after a pass: routes it holds, and announcements it refuses. */
export function setRouteBelief(installed: number, refused: number): void {
  routesInstalled.set(installed);
  refusedAnnouncements.set(refused);
}

export function setAnnouncedPrefixes(count: number): void {
  announcedPrefixes.set(count);
}

/** Per route installer of the process (one, but for tests): its host, and when it last saw each host's heartbeat. */
const heartbeatSources = new Set<{ self: string; lastSeen: ReadonlyMap<string, number> }>();
new Gauge({
  name: "trellis_agent_heartbeat_age_seconds",
  help: "Seconds since the agent last saw each other host's heartbeat",
  labelNames: ["peer"],
  registers: [agentRegistry],
  collect() {
    this.reset();
    const now = Date.now();
    for (const { self, lastSeen } of heartbeatSources) for (const [host, at] of lastSeen) if (host !== self) this.set({ peer: host }, (now - at) / 1000);
  },
});

/** Reports the heartbeat ages of the other hosts from `lastSeen` (host → ms since the epoch), until the returned function is called. */
export function followHeartbeatAges(self: string, lastSeen: ReadonlyMap<string, number>): () => void {
  const source = { self, lastSeen };
  heartbeatSources.add(source);
  return () => heartbeatSources.delete(source);
}

/** The outcomes of a DNS query, as the agent's resolver reports them. */
/** Where a DNS answer came from: the names of the host's networks, or the host's resolvers. */
export type DnsSource = "local" | "forwarded";

const RCODE_LABELS = ["NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"];

/** For the agent's DNS server (services/link-agent/dns/): one call per answer sent, labelled by its rcode. */
export function countDnsAnswer(source: DnsSource, answer: Buffer): void {
  const rcode = answer.length >= 4 ? (RCODE_LABELS[answer.readUInt16BE(2) & 0x0f] ?? "other") : "other";
  dnsQueries.inc({ source, rcode });
}
