import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { context, ROOT_CONTEXT } from "@opentelemetry/api";
import { suppressTracing } from "@opentelemetry/core";
import { openBucket } from "../../libs/bus/connection.js";
import { codecOf } from "../../libs/bus/codec.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { contextFromTraceparent } from "../../libs/bus/trace.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import { openNetlink, type NetlinkHandle } from "../../libs/netlink/index.js";
import { HostDesiredState, type EndpointStatus, type NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { ensureEndpoint, failedStatus, removeStaleNamespaces } from "./endpoints.js";
import { writeHeartbeat } from "./heartbeat.js";
import { ensureHostsFile, NETNS_ETC_DIR, removeStaleHostsFiles } from "./hosts-file.js";
import { findMissingLinkKinds, NEEDED_LINK_KINDS } from "./link-kinds.js";
import { ensureParent, removeUnusedParents, type ParentResult } from "./parents.js";
import { RouteDistribution } from "./routes/distribution.js";
import { StatusPublisher } from "./status.js";
import type { BgpOptions } from "./bgp/options.js";

const desiredCodec = codecOf(HostDesiredState);

export interface AgentOptions {
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
  private desired: HostDesiredState | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  /** Spec fingerprints already converged in this process: their work no longer joins the intent's trace. */
  private readonly converged = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private stopWatch: (() => void) | undefined;
  private missingKinds: readonly string[] = [];

  private constructor(
    private readonly options: AgentOptions,
    private readonly hosts: KV,
    private readonly desiredBucket: KV,
    private readonly statuses: StatusPublisher,
    private readonly routes: RouteDistribution,
  ) {}

  static async start(nc: NatsConnection, options: AgentOptions): Promise<LinkAgent> {
    // Under way while the buckets open: the first heartbeat already carries the answer.
    const missingKinds = findMissingLinkKinds(NEEDED_LINK_KINDS);
    const [hosts, desired, status] = await Promise.all([Buckets.hosts, Buckets.desired, Buckets.status].map((b) => openBucket(nc, b)));
    const agent = new LinkAgent(options, hosts, desired, new StatusPublisher(status, options.host), await RouteDistribution.start(nc, options));
    await agent.statuses.load();
    agent.missingKinds = (await missingKinds) ?? [];
    await agent.heartbeat();
    await agent.loadDesired();
    await agent.watchDesired();
    agent.timers = [
      setInterval(() => void agent.heartbeat().catch(logError("heartbeat")), options.heartbeatMs),
      setInterval(() => agent.schedule(), options.resyncMs),
      setInterval(() => void agent.recheckLinkKinds().catch(logError("heartbeat")), options.resyncMs),
    ];
    return agent;
  }

  async stop(): Promise<void> {
    this.timers.forEach(clearInterval);
    this.stopWatch?.();
    await this.running;
    await this.routes.stop();
  }

  /** Runs a pass now, or right after the one under way: never two at once, never a change missed. */
  schedule(): void {
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

  private heartbeat(): Promise<void> {
    return writeHeartbeat(this.hosts, { ...this.options, missingLinkKinds: this.missingKinds });
  }

  /** Kinds found missing are asked for again now and then, so that loading a module needs no agent restart. */
  private async recheckLinkKinds(): Promise<void> {
    if (this.missingKinds.length === 0) return;
    const missing = await findMissingLinkKinds(this.missingKinds);
    if (!missing || missing.length === this.missingKinds.length) return;
    this.missingKinds = missing;
    await this.heartbeat();
  }

  /** Read before watching, so that the first pass (and `settled`) already works on the stored state. */
  private async loadDesired(): Promise<void> {
    const entry = await this.desiredBucket.get(this.options.host);
    if (entry?.operation === "PUT") this.desired = desiredCodec.decode(entry.value);
  }

  private async watchDesired(): Promise<void> {
    const watch = await this.desiredBucket.watch({ key: this.options.host });
    this.stopWatch = () => watch.stop();
    void (async () => {
      for await (const entry of watch) {
        this.desired = entry.operation === "PUT" ? desiredCodec.decode(entry.value) : undefined;
        this.schedule();
      }
    })();
  }

  private async converge(): Promise<void> {
    const desired = this.desired;
    if (!desired) return;
    const root = await openNetlink();
    try {
      const links = await root.listLinks();
      const parents = new Map<string, ParentResult>();
      for (const network of desired.networks) {
        parents.set(network.id, await this.traced(`network:${network.id}`, network.traceparent, "agent.parent.ensure", { "trellis.network": network.name }, () =>
          ensureParent(this.options.host, root, links, network),
        ));
      }
      const statuses = new Map<string, EndpointStatus>();
      for (const endpoint of desired.endpoints) {
        const network = desired.networks.find((n) => n.id === endpoint.networkId);
        statuses.set(endpoint.id, await this.endpointStatus(root, endpoint, network, network && parents.get(network.id), desired.names));
      }
      await removeStaleNamespaces(this.options.host, desired.endpoints);
      await removeStaleHostsFiles(this.etcDir, this.options.host, desired.endpoints);
      await removeUnusedParents(root, await root.listLinks(), desired.networks);
      await this.statuses.publish(statuses);
      await this.routes.announce(desired, [...statuses.values()]);
    } finally {
      root.close();
    }
  }

  private async endpointStatus(
    root: NetlinkHandle,
    endpoint: Endpoint,
    network: Network | undefined,
    parent: ParentResult | undefined,
    names: NameEntry[],
  ): Promise<EndpointStatus> {
    if (!network || !parent) return failedStatus(endpoint, `network ${endpoint.networkName} is not known on host ${this.options.host}`);
    if ("error" in parent) return failedStatus(endpoint, parent.error);
    const attributes = { "trellis.container": endpoint.container, "trellis.host": endpoint.host };
    const fingerprint = `endpoint:${endpoint.id}:${endpoint.addresses.join(",")}`;
    try {
      return await this.traced(fingerprint, endpoint.traceparent, "agent.endpoint.ensure", attributes, async () => {
        const status = await ensureEndpoint(root, endpoint, network, parent.index);
        await ensureHostsFile(this.etcDir, endpoint, names);
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

function logError(what: string) {
  return (error: Error) => console.error(`failed to ${what}: ${error.message}`);
}
