import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { context, ROOT_CONTEXT } from "@opentelemetry/api";
import { suppressTracing } from "@opentelemetry/core";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, MAX_REPORTED_INTERFACES } from "../../libs/bus/subjects.js";
import { contextFromTraceparent } from "../../libs/bus/trace.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import { openNetlink, type NetlinkHandle } from "../../libs/netlink/index.js";
import type { EndpointStatus, NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { DesiredState } from "./desired.js";
import { ensureEndpoint, failedStatus, removeStaleNamespaces } from "./endpoints.js";
import { writeHeartbeat } from "./heartbeat.js";
import { ensureHostShim, removeStaleShims } from "./host-shim.js";
import { ensureHostsFile, NETNS_ETC_DIR, removeStaleHostsFiles } from "./hosts-file.js";
import { findMissingLinkKinds, NEEDED_LINK_KINDS } from "./link-kinds.js";
import { ensureParent, removeUnusedParents, type ParentResult } from "./parents.js";
import { RouteDistribution } from "./routes/distribution.js";
import { StatusPublisher } from "./status.js";
import type { RecordTrust } from "../../libs/tls/record-signature.js";
import type { BgpOptions } from "./bgp/options.js";

/** `signer` and `verifier`: its heartbeats and announcements signed, and others' checked (libs/tls/record-signature.ts). */
export interface AgentOptions extends RecordTrust {
  host: string;
  /** The host's underlay addresses, at most one per family: the next hops it announces for its L3 blocks. */
  addresses: string[];
  role: "host" | "upstream";
  heartbeatMs: number;
  /** Level-triggered safety net: converge this often even when nothing was announced. */
  resyncMs: number;
  /** Where containers' hosts files go (NETNS_ETC_DIR, which `ip netns exec` reads); tests point it elsewhere. */
  netnsEtcDir?: string;
  /** Set by --bgp-as and --bgp-peer: the host advertises what it serves to these routers (bgp/speaker.ts). */
  bgp?: BgpOptions;
}

/**
 * One per host. Watches the host's desired state, converges the kernel to it, and publishes what the
 * kernel really has. Every pass reads both sides afresh, so the agent may be killed at any instant.
 */
export class LinkAgent {
  private desired!: DesiredState;
  private running: Promise<void> | undefined;
  private again = false;
  /** Spec fingerprints already converged in this process: their work no longer joins the intent's trace. */
  private readonly converged = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private missingKinds: readonly string[] = [];
  /** No pass before the stored desired state is in: a pass on none of it would remove every container. */
  private loaded = false;

  private constructor(
    private readonly options: AgentOptions,
    private readonly hosts: KV,
    private readonly statuses: StatusPublisher,
    private readonly routes: RouteDistribution,
  ) {}

  static async start(nc: NatsConnection, options: AgentOptions): Promise<LinkAgent> {
    // Under way while the buckets open: the first heartbeat already carries the answer.
    const missingKinds = findMissingLinkKinds(NEEDED_LINK_KINDS);
    const [hosts, status, networks, desired, names] = await Promise.all(
      [Buckets.hosts, Buckets.status, Buckets.networks, Buckets.desired, Buckets.names].map((b) => openBucket(nc, b)),
    );
    const agent = new LinkAgent(options, hosts, new StatusPublisher(status, options.host, options), await RouteDistribution.start(nc, options));
    await agent.statuses.load();
    agent.missingKinds = (await missingKinds) ?? [];
    await agent.heartbeat();
    agent.desired = await DesiredState.start({ networks, desired, names }, options.host, () => agent.schedule(), (line) => console.error(line));
    agent.loaded = true;
    agent.timers = [
      setInterval(() => void agent.heartbeat().catch(logError("heartbeat")), options.heartbeatMs),
      setInterval(() => agent.schedule(), options.resyncMs),
      setInterval(() => void agent.recheckLinkKinds().catch(logError("heartbeat")), options.resyncMs),
    ];
    return agent;
  }

  async stop(): Promise<void> {
    this.timers.forEach(clearInterval);
    this.desired?.stop();
    await this.running;
    await this.routes.stop();
  }

  /** Runs a pass now, or right after the one under way: never two at once, never a change missed. */
  schedule(): void {
    if (!this.loaded) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.converge()
      .catch(logError("converge"))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      });
  }

  /** Resolves once a pass that started after this call has finished. */
  async settled(): Promise<void> {
    this.schedule();
    while (this.running) await this.running;
  }

  /** Link kinds the agent needs that the kernel lacks, as its heartbeat reports them. */
  get missingLinkKinds(): readonly string[] {
    return this.missingKinds;
  }

  private async heartbeat(): Promise<void> {
    await writeHeartbeat(this.hosts, { ...this.options, missingLinkKinds: this.missingKinds, interfaces: await interfaceNames() });
  }

  /** Kinds found missing are asked for again now and then, so that loading a module needs no agent restart. */
  private async recheckLinkKinds(): Promise<void> {
    if (this.missingKinds.length === 0) return;
    const missing = await findMissingLinkKinds(this.missingKinds);
    if (!missing || missing.length === this.missingKinds.length) return;
    this.missingKinds = missing;
    await this.heartbeat();
  }

  private async converge(): Promise<void> {
    const networks = this.desired.networks().sort((a, b) => a.name.localeCompare(b.name));
    const endpoints = this.desired.endpoints().sort((a, b) => a.container.localeCompare(b.container));
    const root = await openNetlink();
    try {
      const links = await root.listLinks();
      const parents = new Map<string, ParentResult>();
      for (const network of networks) {
        parents.set(network.id, await this.traced(`network:${network.id}`, network.traceparent, "agent.parent.ensure", { "trellis.network": network.name }, () =>
          ensureParent(this.options.host, root, links, network),
        ));
        const parent = parents.get(network.id)!;
        await ensureHostShim(root, links, network, "index" in parent ? parent.index : undefined, this.desired.shimOf(network.id), endpoints).catch(logError("converge"));
      }
      await removeStaleShims(root, links, networks).catch(logError("converge"));
      const networksById = new Map(networks.map((network) => [network.id, network]));
      const statuses = new Map<string, EndpointStatus>();
      for (const endpoint of endpoints) {
        const network = networksById.get(endpoint.networkId);
        const names = this.desired.namesOf(endpoint.networkId);
        statuses.set(endpoint.id, await this.endpointStatus(root, endpoint, network, network && parents.get(network.id), names));
      }
      await removeStaleNamespaces(this.options.host, endpoints);
      await removeStaleHostsFiles(this.etcDir, this.options.host, endpoints);
      await removeUnusedParents(root, await root.listLinks(), networks);
      await this.statuses.publish(statuses);
      await this.routes.announce(networks, endpoints, [...statuses.values()]);
    } finally {
      root.close();
    }
  }

  private async endpointStatus(
    root: NetlinkHandle,
    endpoint: Endpoint,
    network: Network | undefined,
    parent: ParentResult | undefined,
    names: NameEntry[] | undefined,
  ): Promise<EndpointStatus> {
    if (!network || !parent) return failedStatus(endpoint, `network ${endpoint.networkName} is not known on host ${this.options.host}`);
    if ("error" in parent) return failedStatus(endpoint, parent.error);
    const attributes = { "trellis.container": endpoint.container, "trellis.host": endpoint.host };
    const fingerprint = `endpoint:${endpoint.id}:${endpoint.addresses.join(",")}`;
    try {
      return await this.traced(fingerprint, endpoint.traceparent, "agent.endpoint.ensure", attributes, async () => {
        const status = await ensureEndpoint(root, endpoint, network, parent.index);
        if (names) await ensureHostsFile(this.etcDir, endpoint, names);
        return status;
      });
    } catch (error) {
      this.converged.delete(fingerprint);
      return failedStatus(endpoint, describeKernelError(this.options.host, error as Error));
    }
  }

  /**
   * The first time something is converged its work joins the trace of the intent that asked for it;
   * later passes (resyncs) that find it right stay out of every trace.
   */
  private traced<T>(fingerprint: string, traceparent: string, name: string, attributes: Record<string, string>, work: () => Promise<T>): Promise<T> {
    if (this.converged.has(fingerprint)) return context.with(suppressTracing(ROOT_CONTEXT), work);
    this.converged.add(fingerprint);
    return context.with(contextFromTraceparent(traceparent), () => withSpan(name, attributes, work));
  }

  private get etcDir(): string {
    return this.options.netnsEtcDir ?? NETNS_ETC_DIR;
  }
}

/** A kernel without ipvlan answers EOPNOTSUPP; say that plainly instead of the raw errno. */
function describeKernelError(host: string, error: Error & { code?: string }): string {
  if (error.code === "EOPNOTSUPP" && /ipvlan/.test(error.message)) {
    return `host ${host}'s kernel has no ipvlan support (CONFIG_IPVLAN); load the ipvlan module or use a kernel that has it: ${error.message}`;
  }
  return error.message;
}

/** The host's own interfaces, as its heartbeat reports them to the planner. */
async function interfaceNames(): Promise<string[]> {
  const nl = await openNetlink();
  try {
    return (await nl.listLinks()).map((link) => link.name).sort().slice(0, MAX_REPORTED_INTERFACES);
  } finally {
    nl.close();
  }
}

function logError(what: string) {
  return (error: Error) => console.error(`failed to ${what}: ${error.message}`);
}
