import type { NatsConnection } from "@nats-io/transport-node";
import type { KV } from "@nats-io/kv";
import { context, ROOT_CONTEXT } from "@opentelemetry/api";
import { suppressTracing } from "@opentelemetry/core";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, MAX_REPORTED_INTERFACES } from "../../libs/bus/subjects.js";
import { contextFromTraceparent } from "../../libs/bus/trace.js";
import { withSpan } from "../../libs/telemetry/tracing.js";
import { KeyedWorkQueue, type Priority } from "../../libs/converge/keyed-queue.js";
import { namespaceExists, openNetlink, watchLinks, type LinkEvent, type LinkWatch, type NetlinkHandle } from "../../libs/netlink/index.js";
import { EndpointState, type EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint, Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { DesiredState, type DesiredChange } from "./desired.js";
import { ensureEndpoint, failedStatus, hostNamespaces, openContainerNamespace, removeNamespace } from "./endpoints.js";
import { writeHeartbeat } from "./heartbeat.js";
import { DnsServer } from "./dns/server.js";
import { ensureHostShim, removeStaleShims } from "./host-shim.js";
import { findMissingLinkKinds, NEEDED_LINK_KINDS } from "./link-kinds.js";
import { ensureParent, OWNED_LINK_ALIAS, removeUnusedParents, type ParentResult } from "./parents.js";
import { RouteDistribution } from "./routes/distribution.js";
import { StatusPublisher } from "./status.js";
import { isRuntimeNamespace, removeRuntimeLink } from "./runtime-namespace.js";
import type { RecordTrust } from "../../libs/tls/record-signature.js";
import type { BgpOptions } from "./bgp/options.js";
import { containerStateChanged, measuredStep, type ConvergenceStep } from "../../libs/metrics/agent.js";

/** `signer` and `verifier`: its heartbeats and announcements signed, and others' checked (libs/tls/record-signature.ts). */
export interface AgentOptions extends RecordTrust {
  host: string;
  /** The host's underlay addresses, at most one per family: the next hops it announces for its L3 blocks. */
  addresses: string[];
  role: "host" | "upstream";
  heartbeatMs: number;
  /** Level-triggered safety net: converge this often even when nothing was announced. */
  resyncMs: number;
  /** Where containers' resolv.conf go (NETNS_ETC_DIR, which `ip netns exec` reads); tests point it elsewhere. */
  netnsEtcDir?: string;
  /** The host's resolvers, whom the containers' DNS server forwards other names to (default /etc/resolv.conf). */
  resolvConf?: string;
  /** Set by --host-dns: a loopback address where the DNS server also answers in the agent's namespace (for dockerd). */
  hostDns?: string;
  /** Set by --bgp-as and --bgp-peer: the host advertises what it serves to these routers (bgp/speaker.ts). */
  bgp?: BgpOptions;
}

/** Endpoint steps at once: enough to overlap their kernel calls and their `ip netns add`. */
const ENDPOINT_CONCURRENCY = 4;
/** Of those, the full pass's: one, so that an attach waits at most for one step that finds all right. */
const FULL_PASS_CONCURRENCY = 1;

/** What the agent holds open for one container while it exists: a socket in its namespace and a link watch there. */
interface Container {
  endpointId: string;
  netns: string;
  /** The link the agent made in it: what goes when the container goes from a runtime's namespace (kept). */
  ifname: string;
  handle: NetlinkHandle | undefined;
  watch: LinkWatch | undefined;
  /** The agent made the namespace and has not converged it yet: the first step reads nothing before it makes. */
  fresh: boolean;
}

/**
 * One per host. Converges the kernel to the host's desired state one piece at a time: a change to one endpoint
 * runs that endpoint's step (after its network's parent step) and nothing else, and the kernel's link
 * notifications run the step of whatever lost a link. A full pass over everything, on start and every
 * resyncMs, is the level-triggered safety net; it goes through the same queues at background priority, so it
 * never holds up an attach. Each step reads the kernel afresh, so the agent may be killed at any instant.
 *
 * The steps, for whoever needs to hook into them: convergeParent (per network: its parent link),
 * convergeEndpoint (per container, keyed by its namespace: namespace, eth0, addresses, routes, DNS, status),
 * announce (the host's route announcement). Names need no step: the DNS server answers from the names bucket.
 */
export class LinkAgent {
  private desired!: DesiredState;
  private dns!: DnsServer;
  /** Spec fingerprints already converged in this process: their work no longer joins the intent's trace. */
  private readonly converged = new Set<string>();
  private timers: NodeJS.Timeout[] = [];
  private resyncTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private missingKinds: readonly string[] = [];
  /** The interfaces the last heartbeat reported. */
  private reportedInterfaces = new Set<string>();
  /** No step before the stored desired state is in: a pass on none of it would remove every container. */
  private loaded = false;
  /** Network id → the outcome of its parent step, which its endpoints' steps use. */
  private readonly parents = new Map<string, ParentResult>();
  private readonly containers = new Map<string, Container>();
  /** Endpoint id → the status last read back from the kernel: what announcements are computed from. */
  private readonly statusById = new Map<string, EndpointStatus>();
  private hostWatch: LinkWatch | undefined;
  private readonly parentQueue = this.queue("parent", (networkId, priority) => this.convergeParent(networkId, priority), Number.POSITIVE_INFINITY, "converge the parent of network");
  private readonly endpointQueue = this.queue("container", (netns, priority) => this.convergeEndpoint(netns, priority), ENDPOINT_CONCURRENCY, "converge container namespace", FULL_PASS_CONCURRENCY);
  private readonly shimQueue = this.queue("shim", (networkId) => this.convergeShim(networkId), 1, "converge the host shim of network");
  private readonly announceQueue = this.queue("announce", () => this.announce(), 1, "announce the host's routes");
  private readonly passQueue = this.queue("full", () => this.fullPass(), 1, "run the full pass");

  private constructor(
    private readonly options: AgentOptions,
    private readonly hosts: KV,
    private readonly statuses: StatusPublisher,
    private readonly routes: RouteDistribution,
    /** A socket in the host's namespace, for parents, held for the agent's life. */
    private readonly root: NetlinkHandle,
  ) {}

  static async start(nc: NatsConnection, options: AgentOptions): Promise<LinkAgent> {
    // Under way while the buckets open: the first heartbeat already carries the answer.
    const missingKinds = findMissingLinkKinds(NEEDED_LINK_KINDS);
    const [hosts, status, networks, desired, names] = await Promise.all(
      [Buckets.hosts, Buckets.status, Buckets.networks, Buckets.desired, Buckets.names].map((b) => openBucket(nc, b)),
    );
    const routes = await RouteDistribution.start(nc, options);
    const agent = new LinkAgent(options, hosts, new StatusPublisher(status, options.host, options), routes, await openNetlink());
    await agent.statuses.load();
    agent.missingKinds = (await missingKinds) ?? [];
    await agent.heartbeat();
    agent.hostWatch = watchLinks(undefined, (event) => agent.hostLinkChanged(event), () => agent.lostNotifications());
    agent.dns = DnsServer.start({ host: options.host, etcDir: options.netnsEtcDir, resolvConf: options.resolvConf });
    if (options.hostDns) await agent.dns.listenOnHost(options.hostDns);
    agent.desired = await DesiredState.start(
      { networks, desired, names },
      options.host,
      (change) => agent.changed(change),
      (line) => console.error(line),
      agent.dns.names,
      options.verifier,
    );
    agent.loaded = true;
    void agent.passQueue.request("full").then(() => agent.resyncLater());
    agent.timers = [
      setInterval(() => void agent.heartbeat().catch(logError("heartbeat")), options.heartbeatMs),
      setInterval(() => void agent.recheckLinkKinds().catch(logError("heartbeat")), options.resyncMs),
    ];
    return agent;
  }

  /** The periodic full pass: resyncMs after the last one ended, so that a long one is not followed at once by the next. */
  private resyncLater(): void {
    if (this.stopped) return;
    this.resyncTimer = setTimeout(() => void this.passQueue.request("full", "background").then(() => this.resyncLater()), this.options.resyncMs);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timers.forEach(clearInterval);
    clearTimeout(this.resyncTimer);
    this.desired?.stop();
    this.hostWatch?.close();
    const queues = [this.passQueue, this.endpointQueue, this.parentQueue, this.shimQueue, this.announceQueue];
    for (const queue of queues) await queue.stop();
    await this.dns?.stop();
    for (const container of this.containers.values()) closeContainer(container);
    this.root.close();
    await this.routes.stop();
  }

  /** Asks for a full pass: now, or right after the one under way. */
  schedule(): void {
    if (this.loaded) void this.passQueue.request("full");
  }

  /** Resolves once a full pass that started after this call has finished. */
  async settled(): Promise<void> {
    if (this.loaded) await this.passQueue.request("full");
  }

  /** Link kinds the agent needs that the kernel lacks, as its heartbeat reports them. */
  get missingLinkKinds(): readonly string[] {
    return this.missingKinds;
  }

  private async heartbeat(): Promise<void> {
    const interfaces = await this.interfaceNames();
    this.reportedInterfaces = new Set(interfaces);
    await writeHeartbeat(this.hosts, { ...this.options, missingLinkKinds: this.missingKinds, interfaces });
  }

  /** Kinds found missing are asked for again now and then, so that loading a module needs no agent restart. */
  private async recheckLinkKinds(): Promise<void> {
    if (this.missingKinds.length === 0) return;
    const missing = await findMissingLinkKinds(this.missingKinds);
    if (!missing || missing.length === this.missingKinds.length) return;
    this.missingKinds = missing;
    await this.heartbeat();
  }

  /** One stored change: only the steps of what it touches. */
  private changed(change: DesiredChange): void {
    // The full pass does not look at crowded endpoints: they are refused as they come, loaded or not.
    if (change.kind === "crowded") return void this.refuseCrowded(change.endpoint, change.holder).catch(logError(`report container ${change.endpoint.container}`));
    if (!this.loaded) return; // the first full pass covers all of it
    switch (change.kind) {
      case "endpoint":
        void this.endpointQueue.request(change.endpoint.netns);
        // Only a network with host shims routes to its containers from the host: in any other, an attach has no
        // shim work (a stale shim goes with its network's change or the full pass), and no dump of the host's links.
        if (this.desired.network(change.endpoint.networkId)?.hostShim) void this.shimQueue.request(change.endpoint.networkId);
        return;
      case "shim":
        void this.shimQueue.request(change.networkId);
        return;
      case "network":
        void this.parentQueue.request(change.network.id);
        void this.shimQueue.request(change.network.id);
        // Endpoints that were waiting for their network (failed: not known here) can go on now.
        for (const endpoint of this.desired.endpointsOf(change.network.id)) {
          if (this.statusById.get(endpoint.id)?.state !== EndpointState.ENDPOINT_STATE_READY) void this.endpointQueue.request(endpoint.netns);
        }
        void this.announceQueue.request("announce");
    }
  }

  /**
   * A link of the host's namespace deleted or changed: a deleted parent is put back by its networks' parent steps,
   * and one that appears (the operator made it) lets the networks that were waiting for it go on.
   */
  private hostLinkChanged(event: LinkEvent): void {
    const networks = this.loaded ? this.desired.networksOnParent(event.name) : [];
    // The planner accepts a parent only where a heartbeat reports it: an interface made or removed by hand is
    // reported now, not at the next heartbeat, so that a `network create` right after `ip link add` finds it. A parent
    // of this host's networks is the agent's to repair: the next heartbeat reports it, and the repair goes first.
    const unreported = (event.type === "new") !== this.reportedInterfaces.has(event.name);
    if (unreported && networks.length === 0) void this.heartbeat().catch(logError("heartbeat"));
    for (const network of networks) {
      // Forgotten at once: a container step that starts now waits for the parent step instead of using a dead index.
      if (event.type === "deleted") this.parents.delete(network.id);
      if (event.type === "deleted" || !("index" in (this.parents.get(network.id) ?? {}))) void this.parentQueue.request(network.id);
    }
  }

  /** The kernel dropped notifications (its buffer was full): any change may be among them. */
  private lostNotifications(): void {
    console.error("link notifications were lost; converging everything");
    this.schedule();
  }

  /** The per-network step: the network's parent link exists and is up, or goes with the last network using it. */
  private async convergeParent(networkId: string, priority: Priority): Promise<void> {
    const network = this.desired.network(networkId);
    if (!network) {
      this.parents.delete(networkId);
      return;
    }
    const parent = network.parent!;
    const links = (await Promise.all([parent.name, parent.base].filter(Boolean).map((name) => this.root.getLink(name)))).flatMap((link) => (link ? [link] : []));
    const result = await this.traced(`network:${network.id}`, network.traceparent, priority, "agent.parent.ensure", { "trellis.network": network.name }, () =>
      ensureParent(this.options.host, this.root, links, network),
    );
    const previous = this.parents.get(networkId);
    this.parents.set(networkId, result);
    void this.shimQueue.request(networkId);
    // A parent made again (deleted by hand) or put right: its containers' eth0s went with the old one, or wait for it.
    if (previous && !sameParent(previous, result)) {
      for (const endpoint of this.desired.endpointsOf(networkId)) void this.endpointQueue.request(endpoint.netns);
    }
  }

  /**
   * The per-endpoint step, keyed by the container's namespace: the container as desired (after its network's
   * parent step), or, when no endpoint wants the namespace any more, its removal.
   */
  private async convergeEndpoint(netns: string, priority: Priority): Promise<void> {
    const endpoint = this.desired.endpointIn(netns);
    if (!endpoint) return this.removeEndpoint(netns);
    if (endpoint.ipamOnly) return; // another CNI plugin makes its link: nothing here
    const network = this.desired.network(endpoint.networkId);
    // A change (an attach, a link deleted by hand) converges the parent too: its notification may not have been seen
    // yet. The full pass has just run every parent step, so its container steps take the outcome as it is, unless
    // the parent was not usable. Background: no change of the parent's own (see traced).
    const parent = network && this.parents.get(network.id);
    if (network && (priority === "urgent" || !parent || !("index" in parent))) await this.parentQueue.request(network.id, "background");
    const status = await this.endpointStatus(endpoint, network, priority);
    await this.record(endpoint, status);
  }

  /**
   * A step that fails looks at its parent once more and tries again: the parent may have been deleted a moment ago,
   * its notification not yet seen, so that the index in hand is stale.
   */
  private async endpointStatus(endpoint: Endpoint, network: Network | undefined, priority: Priority): Promise<EndpointStatus> {
    const first = await this.endpointStatusOnce(endpoint, network, network && this.parents.get(network.id), priority);
    if (first.state !== EndpointState.ENDPOINT_STATE_FAILED || !network) return first;
    const before = this.parents.get(network.id);
    await this.parentQueue.request(network.id);
    const after = this.parents.get(network.id);
    if (!after || !("index" in after) || (before && sameParent(before, after))) return first;
    return this.endpointStatusOnce(endpoint, network, after, priority);
  }

  private async endpointStatusOnce(endpoint: Endpoint, network: Network | undefined, parent: ParentResult | undefined, priority: Priority): Promise<EndpointStatus> {
    if (!network || !parent) return failedStatus(endpoint, `network ${endpoint.networkName} is not known on host ${this.options.host}`);
    if ("error" in parent) return failedStatus(endpoint, parent.error);
    const attributes = { "trellis.container": endpoint.container, "trellis.host": endpoint.host };
    const fingerprint = `endpoint:${endpoint.id}:${endpoint.addresses.join(",")}`;
    try {
      return await this.traced(fingerprint, endpoint.traceparent, priority, "agent.endpoint.ensure", { ...attributes, netns: endpoint.netns }, async () => {
        const { handle: inside, fresh } = await this.containerHandle(endpoint);
        const status = await ensureEndpoint(this.root, inside, endpoint, network, parent.index, fresh);
        await this.dns.serve(endpoint);
        return status;
      });
    } catch (error) {
      this.converged.delete(fingerprint);
      // The next try starts from a fresh socket: this one may be what failed.
      const container = this.containers.get(endpoint.netns);
      container?.handle?.close();
      if (container) container.handle = undefined;
      return failedStatus(endpoint, describeKernelError(this.options.host, error as Error));
    }
  }

  /**
   * The container's socket, opened once and kept while the namespace exists; and the watch that runs the
   * container's step when one of its links is deleted (`ip link del eth0` by hand, or its parent's deletion).
   */
  private async containerHandle(endpoint: Endpoint): Promise<{ handle: NetlinkHandle; fresh: boolean }> {
    let container = this.containers.get(endpoint.netns);
    if (container && !namespaceExists(endpoint.netns)) {
      // Deleted under us (ip netns delete): the sockets still hold the old, orphaned namespace.
      closeContainer(container);
      container = undefined;
    }
    if (!container) {
      container = { endpointId: endpoint.id, netns: endpoint.netns, ifname: endpoint.ifname, handle: undefined, watch: undefined, fresh: false };
      this.containers.set(endpoint.netns, container);
    }
    if (!container.handle) ({ handle: container.handle, fresh: container.fresh } = await openContainerNamespace(endpoint.netns));
    const netns = endpoint.netns;
    container.watch ??= watchLinks(netns, (event) => event.type === "deleted" && void this.endpointQueue.request(netns), () => this.lostNotifications());
    // Fresh once: a step that fails half-way leaves the next one to read what is there.
    const fresh = container.fresh;
    container.fresh = false;
    return { handle: container.handle, fresh };
  }

  /** Publishes the endpoint's status if it changed, and then the host's routes (they follow from the statuses). */
  private async record(endpoint: Endpoint, status: EndpointStatus): Promise<void> {
    const container = this.containers.get(endpoint.netns);
    if (container && container.endpointId !== endpoint.id) {
      // The namespace's container was replaced by another of the same name: the old one's status goes.
      await this.forget(container.endpointId);
      container.endpointId = endpoint.id;
    }
    containerStateChanged(this.statusById.get(endpoint.id), status);
    this.statusById.set(endpoint.id, status);
    if (await this.statuses.put(status)) void this.announceQueue.request("announce");
  }

  /**
   * A second endpoint in one namespace fails, and the holder's link stays as it is; its status goes with it. Its
   * caller (the CNI plugin, the Docker plugin) reads the failure and detaches it.
   */
  private async refuseCrowded(endpoint: Endpoint, holder: Endpoint | undefined): Promise<void> {
    if (!holder) return this.forget(endpoint.id);
    const status = failedStatus(
      endpoint,
      `namespace ${endpoint.netns} already has Trellis interface ${holder.ifname} of container ${holder.container} on network ${holder.networkName}: a namespace has one Trellis network for now; detach ${holder.container} first, or give the container its second network through another plugin`,
    );
    this.statusById.set(endpoint.id, status);
    await this.statuses.put(status);
  }

  /**
   * A removed endpoint: its namespace (and so its eth0), its /etc/netns folder and its status, nothing else. The
   * status goes last, as the sign (which DEL and `trellis rm` wait for) that the link is gone; a removal that fails
   * keeps the container, so that the next pass tries again.
   */
  private async removeEndpoint(netns: string): Promise<void> {
    const container = this.containers.get(netns);
    if (container) closeContainer(container);
    // Before the namespace goes: the DNS server's sockets in it would keep it, and its eth0, alive.
    await this.dns.release(netns);
    // In a runtime's namespace only the link this agent made goes; the namespace is the runtime's.
    if (isRuntimeNamespace(netns)) await (container && removeRuntimeLink(netns, container.ifname));
    else if (netns.endsWith(`@${this.options.host}`)) await removeNamespace(netns);
    if (container) {
      this.containers.delete(netns);
      await this.forget(container.endpointId);
    }
  }

  private async forget(endpointId: string): Promise<void> {
    containerStateChanged(this.statusById.get(endpointId), undefined);
    this.statusById.delete(endpointId);
    if (await this.statuses.remove(endpointId)) void this.announceQueue.request("announce");
  }

  /**
   * The per-network host shim (host-shim.ts): the host's own ipvlan on the network's parent, with a route to each of
   * its containers there; or none. Run after the parent step, and when the host's containers on the network change.
   */
  private async convergeShim(networkId: string): Promise<void> {
    const network = this.desired.network(networkId);
    const links = await this.root.listLinks();
    if (!network) return removeStaleShims(this.root, links, this.desired.networks());
    const parent = this.parents.get(networkId);
    await ensureHostShim(this.root, links, network, parent && "index" in parent ? parent.index : undefined, this.desired.shimOf(networkId), this.desired.endpointsOf(networkId));
  }

  /** The host's route announcement, from the statuses kept in memory: no kernel read. */
  private async announce(): Promise<void> {
    await this.routes.announce(this.desired.networks(), this.desired.endpoints(), [...this.statusById.values()]);
  }

  /**
   * Everything, through the same steps at background priority (a change seen meanwhile goes first), then what
   * nothing wants any more: namespaces, /etc/netns folders and statuses of gone containers, parents of gone networks.
   */
  private async fullPass(): Promise<void> {
    const background: Priority = "background";
    const networks = this.desired.networks();
    await Promise.all(networks.map((network) => this.parentQueue.request(network.id, background)));
    const wanted = this.desired.endpoints();
    const present = new Set([...hostNamespaces(this.options.host), ...this.containers.keys()]);
    const netnses = new Set([...wanted.map((endpoint) => endpoint.netns), ...present]);
    await Promise.all([...netnses].map((netns) => this.endpointQueue.request(netns, background)));
    await this.dns.retainOnly(this.desired.endpoints());
    // A crowded endpoint's failed status stays until its caller detaches it.
    const wantedIds = new Set([...this.desired.endpoints(), ...this.desired.crowdedEndpoints()].map((endpoint) => endpoint.id));
    for (const endpointId of this.statuses.endpointIds()) {
      if (!wantedIds.has(endpointId)) await this.forget(endpointId);
    }
    await Promise.all(networks.map((network) => this.shimQueue.request(network.id, background)));
    await removeStaleShims(this.root, await this.root.listLinks(), this.desired.networks());
    await this.removeStaleParents();
    await this.announceQueue.request("announce", background);
  }

  private async removeStaleParents(): Promise<void> {
    const owned = (await this.root.listLinks()).filter((link) => link.alias === OWNED_LINK_ALIAS);
    if (owned.length > 0) await removeUnusedParents(this.root, owned, this.desired.networks());
  }

  /**
   * The first time something is converged its work joins the trace of the intent that asked for it. Later,
   * a step that a change asked for (a link deleted by hand, an edited endpoint) is a trace of its own, one span,
   * and the full pass, which finds nearly everything right, stays out of every trace.
   */
  private traced<T>(fingerprint: string, traceparent: string, priority: Priority, name: string, attributes: Record<string, string>, work: () => Promise<T>): Promise<T> {
    if (!this.converged.has(fingerprint)) {
      this.converged.add(fingerprint);
      return context.with(contextFromTraceparent(traceparent), () => withSpan(name, attributes, work));
    }
    // One span for the step, none for its calls: the lab writes every span synchronously, and a repair must be quick.
    if (priority === "urgent") return context.with(ROOT_CONTEXT, () => withSpan(name, attributes, () => context.with(suppressTracing(context.active()), work)));
    return context.with(suppressTracing(ROOT_CONTEXT), work);
  }

  /** A queue of one step, each run of it counted and timed (trellis_agent_convergence_passes_total). */
  private queue(step: ConvergenceStep, work: (key: string, priority: Priority) => Promise<void>, concurrency: number, what: string, backgroundConcurrency?: number): KeyedWorkQueue<string> {
    return new KeyedWorkQueue<string>({
      work: (key, priority) => measuredStep(step, () => work(key, priority)),
      concurrency,
      backgroundConcurrency,
      onError: (key, error) => console.error(`failed to ${what} ${key}: ${error.message}`),
    });
  }

  /** The host's own interfaces, as its heartbeat reports them to the planner. */
  private async interfaceNames(): Promise<string[]> {
    return (await this.root.listLinks()).map((link) => link.name).sort().slice(0, MAX_REPORTED_INTERFACES);
  }
}

function sameParent(a: ParentResult, b: ParentResult): boolean {
  return "index" in a && "index" in b ? a.index === b.index : "error" in a && "error" in b && a.error === b.error;
}

function closeContainer(container: Container): void {
  container.handle?.close();
  container.watch?.close();
  container.handle = undefined;
  container.watch = undefined;
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
