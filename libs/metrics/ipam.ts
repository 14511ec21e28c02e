import { Counter, Gauge, Histogram, type Registry } from "prom-client";
import { firstUsable, lastUsable, parsePrefix } from "../ipmath/index.js";
import type { AllocationView } from "../../services/ipam/view.js";
import { measured } from "./outcome.js";

/** Seconds: an allocation is one conditional write when the view is right, a few more when it collides. */
const ALLOCATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5];

export type CollectedKind = "address" | "block";

/**
 * IPAM's metrics. The pool gauges are read from the replica's in-memory view at scrape time (no bucket is read):
 * per subnet a count of the network's held addresses, per host a count of its blocks.
 */
export class IpamMetrics {
  private readonly allocations: Counter<"outcome">;
  private readonly allocationSeconds: Histogram<"outcome">;
  private readonly releases: Counter<"outcome">;
  private readonly collected: Counter<"kind">;

  constructor(registry: Registry, view: AllocationView) {
    this.allocations = new Counter({ name: "trellis_ipam_allocations_total", help: "Address allocations, by outcome (ok, refused, error)", labelNames: ["outcome"], registers: [registry] });
    this.allocationSeconds = new Histogram({
      name: "trellis_ipam_allocation_duration_seconds",
      help: "How long an address allocation took, by outcome",
      labelNames: ["outcome"],
      buckets: ALLOCATION_BUCKETS,
      registers: [registry],
    });
    this.releases = new Counter({ name: "trellis_ipam_releases_total", help: "Releases of an endpoint's addresses, by outcome", labelNames: ["outcome"], registers: [registry] });
    this.collected = new Counter({ name: "trellis_ipam_leaks_collected_total", help: "Leaked allocations released by the collector: addresses of gone endpoints, empty blocks", labelNames: ["kind"], registers: [registry] });
    for (const kind of ["address", "block"] as const) this.collected.inc({ kind }, 0);
    const subnetLabels = ["network_id", "subnet"] as const;
    new Gauge({
      name: "trellis_ipam_addresses_used",
      help: "Usable addresses of a subnet that are held (endpoints, gateway, reserved)",
      labelNames: subnetLabels,
      registers: [registry],
      collect() {
        this.reset();
        for (const { networkId, subnet } of subnetsOf(view)) this.set({ network_id: networkId, subnet: subnet.cidr }, view.takenIn(networkId, parsePrefix(subnet.cidr)));
      },
    });
    new Gauge({
      name: "trellis_ipam_addresses_usable",
      help: "Usable addresses of a subnet (its network and IPv4 broadcast addresses excluded)",
      labelNames: subnetLabels,
      registers: [registry],
      collect() {
        this.reset();
        for (const { networkId, subnet } of subnetsOf(view)) {
          const prefix = parsePrefix(subnet.cidr);
          this.set({ network_id: networkId, subnet: subnet.cidr }, Number(lastUsable(prefix) - firstUsable(prefix) + 1n));
        }
      },
    });
    new Gauge({
      name: "trellis_ipam_blocks",
      help: "Address blocks of L3 networks, by the host that owns them",
      labelNames: ["host"],
      registers: [registry],
      collect() {
        this.reset();
        for (const [host, count] of view.blockCountsByHost()) this.set({ host }, count);
      },
    });
  }

  allocation<T>(allocate: () => Promise<T>): Promise<T> {
    return measured(allocate, (outcome, seconds) => {
      this.allocations.inc({ outcome });
      this.allocationSeconds.observe({ outcome }, seconds);
    });
  }

  release<T>(release: () => Promise<T>): Promise<T> {
    return measured(release, (outcome) => this.releases.inc({ outcome }));
  }

  leakCollected(kind: CollectedKind): void {
    this.collected.inc({ kind });
  }
}

function* subnetsOf(view: AllocationView) {
  for (const network of view.registeredNetworks()) for (const subnet of network.subnets) yield { networkId: network.networkId, subnet };
}
