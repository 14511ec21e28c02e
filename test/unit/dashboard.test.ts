// The dashboard names metrics in PromQL; a renamed metric would leave its panel empty without a word. This keeps
// deploy/grafana/trellis.json true to what the services expose: the registries the services build, read here
// without a scrape (no collect runs, so their views are not needed).
import { readFileSync } from "node:fs";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import type { Registry } from "prom-client";
import { agentRegistry } from "../../libs/metrics/agent.js";
import { observeBus } from "../../libs/metrics/bus.js";
import { serviceRegistry } from "../../libs/metrics/endpoint.js";
import { IpamMetrics } from "../../libs/metrics/ipam.js";
import { PlannerMetrics } from "../../libs/metrics/planner.js";
import { AllocationView } from "../../services/ipam/view.js";
import type { PlannerView } from "../../services/planner/view.js";
import type { ClusterCounts } from "../../services/planner/cluster-status.js";

interface Panel {
  title: string;
  datasource: { uid: string };
  targets: { expr: string }[];
}

const dashboard = JSON.parse(readFileSync(new URL("../../deploy/grafana/trellis.json", import.meta.url), "utf8")) as { panels: Panel[] };

/** A connection that never changes state: observeBus only registers its metrics here. */
const idleConnection = { isClosed: () => false, status: async function* () {}, closed: () => new Promise(() => undefined) } as unknown as NatsConnection;

/** The series names a registry exposes: a histogram as its _bucket, _sum and _count. */
function seriesNames(registry: Registry): string[] {
  return registry.getMetricsAsArray().flatMap((metric) => {
    const { name, type } = metric as unknown as { name: string; type: string };
    return type === "histogram" ? [`${name}_bucket`, `${name}_sum`, `${name}_count`] : [name];
  });
}

function exposed(): Set<string> {
  const planner = serviceRegistry();
  observeBus(idleConnection, planner);
  new PlannerMetrics(planner, {} as PlannerView, {} as ClusterCounts);
  const ipam = serviceRegistry();
  observeBus(idleConnection, ipam);
  new IpamMetrics(ipam, new AllocationView());
  return new Set([planner, ipam, agentRegistry].flatMap(seriesNames));
}

/** Metric names in a PromQL expression: identifiers that are neither functions, keywords nor labels. */
function metricsIn(expr: string): string[] {
  const withoutLabels = expr.replace(/\{[^}]*\}/g, "").replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, "").replace(/\[[^\]]*\]/g, "");
  return [...withoutLabels.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*/g)]
    .filter((match) => !/^\s*\(/.test(withoutLabels.slice(match.index + match[0].length)))
    .map(([name]) => name)
    .filter((name) => name.includes("_"));
}

describe("the Grafana dashboard", () => {
  it("queries only metrics the services expose", () => {
    const names = exposed();
    const missing = dashboard.panels.flatMap((panel) => panel.targets.flatMap(({ expr }) => metricsIn(expr).filter((name) => !names.has(name)).map((name) => `${panel.title}: ${name}`)));
    expect(missing).toEqual([]);
  });

  it("has the panels the issue asks for, each with a query, on the dashboard's Prometheus data source", () => {
    const queried = dashboard.panels.flatMap((panel) => panel.targets.flatMap(({ expr }) => metricsIn(expr)));
    for (const needed of [
      "trellis_planner_intents_total",
      "trellis_planner_intent_duration_seconds_bucket",
      "trellis_ipam_addresses_used",
      "trellis_agent_containers",
      "trellis_agent_convergence_duration_seconds_bucket",
      "trellis_agent_routes_installed",
      "trellis_agent_refused_announcements",
      "trellis_agent_heartbeat_age_seconds",
    ]) {
      expect(queried).toContain(needed);
    }
    for (const panel of dashboard.panels) {
      expect(panel.targets.length, panel.title).toBeGreaterThan(0);
      expect(panel.datasource.uid, panel.title).toBe("${datasource}");
    }
  });

  it("finds the metric names of a query, and not its functions, labels or ranges", () => {
    expect(metricsIn('histogram_quantile(0.99, sum by (le, kind) (rate(trellis_planner_intent_duration_seconds_bucket{job="x"}[$__rate_interval])))')).toEqual([
      "trellis_planner_intent_duration_seconds_bucket",
    ]);
    expect(metricsIn("max by (network_id, subnet) (trellis_ipam_addresses_used) / max by (network_id, subnet) (trellis_ipam_addresses_usable)")).toEqual([
      "trellis_ipam_addresses_used",
      "trellis_ipam_addresses_usable",
    ]);
  });
});
