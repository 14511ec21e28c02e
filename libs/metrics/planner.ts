import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { hostStaleAfterMs } from "../bus/subjects.js";
import type { PlannerView } from "../../services/planner/view.js";
import type { ClusterCounts } from "../../services/planner/cluster-status.js";
import { measured } from "./outcome.js";

/** The four intents of the Control API and of the intent stream. */
export type IntentKind = "create_network" | "delete_network" | "attach" | "detach";

/** Seconds: an intent takes milliseconds when IPAM answers at once, seconds when it waits on a conflict. */
const INTENT_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * The planner's metrics. Counters count what this replica applied; the gauges are read from its in-memory view at
 * scrape time (no bucket is read), so every replica reports the whole cluster as it sees it.
 */
export class PlannerMetrics {
  private readonly intents: Counter<"kind" | "outcome">;
  private readonly intentSeconds: Histogram<"kind" | "outcome">;

  constructor(registry: Registry, view: PlannerView, counts: ClusterCounts) {
    this.intents = new Counter({ name: "trellis_planner_intents_total", help: "Intents applied, by kind and outcome (ok, refused, error)", labelNames: ["kind", "outcome"], registers: [registry] });
    this.intentSeconds = new Histogram({
      name: "trellis_planner_intent_duration_seconds",
      help: "How long applying an intent took, by kind and outcome",
      labelNames: ["kind", "outcome"],
      buckets: INTENT_BUCKETS,
      registers: [registry],
    });
    new Gauge({
      name: "trellis_planner_networks",
      help: "Networks the planner knows",
      registers: [registry],
      collect() {
        this.set(view.networkCount());
      },
    });
    new Gauge({
      name: "trellis_planner_containers",
      help: "Containers placed, by network (name)",
      labelNames: ["network"],
      registers: [registry],
      collect() {
        this.reset();
        for (const network of view.allNetworks()) this.set({ network: network.name }, view.containerCount(network.id));
      },
    });
    new Gauge({
      name: "trellis_planner_container_states",
      help: "Containers by network (name) and the state their host's agent last reported (ready, pending, failed)",
      labelNames: ["network", "state"],
      registers: [registry],
      collect() {
        this.reset();
        for (const network of view.allNetworks()) for (const [state, count] of Object.entries(counts.states(network.id))) this.set({ network: network.name, state }, count);
      },
    });
    new Gauge({
      name: "trellis_planner_hosts",
      help: "Hosts by heartbeat state: live, or stale (silent for longer than their heartbeat allows)",
      labelNames: ["state"],
      registers: [registry],
      collect() {
        const now = Date.now();
        let live = 0;
        let stale = 0;
        for (const name of view.hostNames()) {
          const record = view.host(name);
          if (record && now - Date.parse(record.heartbeatAt) <= hostStaleAfterMs(record.heartbeatIntervalMs)) live++;
          else stale++;
        }
        this.set({ state: "live" }, live);
        this.set({ state: "stale" }, stale);
      },
    });
    new Gauge({
      name: "trellis_planner_hosts_missing_link_kind",
      help: "Hosts whose kernel lacks a link kind (ipvlan, vlan, dummy): the planner places no container there that needs it",
      labelNames: ["kind"],
      registers: [registry],
      collect() {
        this.reset();
        for (const kind of ["ipvlan", "vlan", "dummy"]) this.set({ kind }, 0);
        for (const name of view.hostNames()) for (const kind of view.host(name)?.missingLinkKinds ?? []) this.inc({ kind });
      },
    });
    // Replicas share the intent stream's consumer and the stores' conditional writes: none leads, each is active.
    new Gauge({ name: "trellis_planner_replica", help: "1 for this planner replica, by role (every replica is active)", labelNames: ["role"], registers: [registry] }).set({ role: "active" }, 1);
  }

  /** Runs an intent, counting it and its duration under its kind and outcome. */
  intent<T>(kind: IntentKind, apply: () => Promise<T>): Promise<T> {
    return measured(apply, (outcome, seconds) => {
      this.intents.inc({ kind, outcome });
      this.intentSeconds.observe({ kind, outcome }, seconds);
    });
  }
}
