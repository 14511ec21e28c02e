import type { KV, KvWatchEntry } from "@nats-io/kv";
import { describeRoute, openNetlink, type NetlinkHandle, type RouteChange, type RouteChangeFailure } from "../../../libs/netlink/index.js";
import type { RouteAnnouncement } from "../../../libs/proto/gen/trellis/v1/routes.js";
import type { Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import { FollowedBucket } from "../../../libs/bus/follow.js";
import { Buckets, hostStaleAfterMs, IPAM_BLOCKS_FILTER } from "../../../libs/bus/subjects.js";
import type { BusContact } from "../../../libs/bus/contact.js";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { SignedRecordFilter } from "../../../libs/tls/signed-records.js";
import { Grants, routedNetworkIds, type GrantedPrefix } from "./grants.js";
import { believe, changesSinceApplied, routeChanges, type Belief, type RouteChanges } from "./reconcile.js";
import { countRouteChanges, followHeartbeatAges, setRouteBelief } from "../../../libs/metrics/agent.js";

export interface InstallerOptions {
  host: string;
  role: "host" | "upstream";
  /** The namespace whose main table is programmed; undefined = the process's own. */
  netns?: string;
  staleAfterMs: number;
  /** Level-triggered safety net: compare the kernel with the belief this often even when nothing changed. */
  resyncMs: number;
  log: (line: string) => void;
  /** With it, heartbeats and announcements not signed by their own host's agent are dropped (and logged once). */
  verifier?: RecordVerifier | undefined;
  /**
   * The process's contact with NATS. With it, no host's silence is judged beyond what the bus is known to have
   * delivered, nothing in the kernel is changed while cut off, and every host gets a whole window from the moment
   * contact comes back; without it (the bench), the bus is taken as always there.
   */
  contact?: BusContact | undefined;
}

export interface InstallerBuckets {
  routes: KV;
  hosts: KV;
  /** IPAM's bucket, of which only the block keys are followed: what each host may announce. */
  ipam: KV;
  networks: KV;
}

/**
 * Installs other hosts' announced prefixes as `prefix via <next hop>` routes of TRELLIS_ROUTE_PROTOCOL.
 * Every KV change wakes a pass (milliseconds). The first pass, the periodic resync and any pass after a
 * refused change read the whole kernel table and change only what differs, so a restarted installer
 * changes nothing right and drift is repaired; the passes between compare the belief with what was last
 * applied and send only that difference, so one new announcement costs one route, not a table dump.
 */
export class RouteInstaller {
  private readonly announcements = new Map<string, RouteAnnouncement>();
  private readonly grants: Grants;
  private readonly heartbeats = new Map<string, number>();
  /** Per host, how long it may be silent: at least staleAfterMs, longer for a host that heartbeats less often. */
  private readonly silences = new Map<string, number>();
  /** Every network by bucket key (its name): every host has every network. */
  private readonly allNetworks = new Map<string, Network>();
  private networks = new Set<string>();
  private running: Promise<void> | undefined;
  private again = false;
  /** Set when the next pass must read the kernel: at start, on the resync timer, after a refused change. */
  private resyncDue = true;
  /** What the last pass asked the kernel for: destination prefix → next hop. */
  private applied = new Map<string, string>();
  /** Wanted prefixes the last full pass found routed by someone else. */
  private blocked: RouteChanges["blocked"] = [];
  private reported = new Set<string>();
  /** No pass before every bucket's stored state is in: a pass on half of it would delete right routes. */
  private loaded = false;
  private stopped = false;
  private stops: (() => void)[] = [];
  private timers: NodeJS.Timeout[] = [];
  private readonly signed: SignedRecordFilter;

  private constructor(
    private readonly options: InstallerOptions,
    private readonly nl: NetlinkHandle,
  ) {
    this.signed = new SignedRecordFilter(options.verifier, options.log);
    this.grants = new Grants(options.verifier);
  }

  static async start(buckets: InstallerBuckets, options: InstallerOptions): Promise<RouteInstaller> {
    const installer = new RouteInstaller(options, await openNetlink(options.netns));
    try {
      const log = options.log;
      const followers = await Promise.all([
        FollowedBucket.start(buckets.networks, { bucketName: Buckets.networks, log, onEntry: (entry) => installer.onNetwork(entry) }),
        FollowedBucket.start(buckets.ipam, { bucketName: Buckets.ipam, filter: IPAM_BLOCKS_FILTER, log, onEntry: (entry) => installer.onGrant(entry) }),
        FollowedBucket.start(buckets.hosts, { bucketName: Buckets.hosts, log, onEntry: (entry) => installer.onHeartbeat(entry) }),
        FollowedBucket.start(buckets.routes, { bucketName: Buckets.routes, log, onEntry: (entry) => installer.onAnnouncement(entry) }),
      ]);
      installer.stops = [...followers.map((follower) => () => follower.stop()), followHeartbeatAges(options.host, installer.heartbeats)];
      const unsubscribe = options.contact?.onChange((inContact) => {
        options.log(
          inContact
            ? "contact with NATS is back: every host has a whole heartbeat window from now before its routes may be withdrawn"
            : "lost contact with NATS: no host's routes are withdrawn and no route is changed until it is back",
        );
        if (inContact) installer.schedule();
      });
      if (unsubscribe) installer.stops.push(unsubscribe);
    } catch (error) {
      await installer.stop();
      throw new Error(`failed to start the route installer of host ${options.host}: ${(error as Error).message}`);
    }
    installer.loaded = true;
    await installer.settled();
    installer.timers = [
      // Heartbeats age without any event: look often, but touch the kernel only if the belief changed.
      setInterval(() => installer.scheduleIfChanged(), Math.max(100, Math.floor(options.staleAfterMs / 10))),
      setInterval(() => installer.resync(), options.resyncMs),
    ];
    return installer;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timers.forEach(clearInterval);
    this.stops.forEach((stop) => stop());
    while (this.running) await this.running;
    this.nl.close();
  }

  /** Resolves once a pass that started after this call has finished. */
  async settled(): Promise<void> {
    this.schedule();
    while (this.running) await this.running;
  }

  /** The routes this installer believes right now: destination prefix → next hop. */
  believed(): Map<string, string> {
    return this.belief().routes;
  }

  /** What IPAM gave this host: the prefixes its own announcement may carry. */
  grantsOfSelf(): GrantedPrefix[] {
    return this.grants.of(this.options.host);
  }

  private onNetwork(entry: KvWatchEntry): void {
    if (entry.operation !== "PUT") this.allNetworks.delete(entry.key);
    else {
      const network = this.signed.network(entry);
      if (!network) return;
      this.allNetworks.set(entry.key, network);
    }
    this.networks = routedNetworkIds(this.allNetworks.values());
    this.schedule();
  }

  private onGrant(entry: KvWatchEntry): void {
    this.grants.apply(entry);
    this.schedule();
  }

  private onHeartbeat(entry: KvWatchEntry): void {
    const record = entry.operation === "PUT" ? this.signed.heartbeat(entry) : undefined;
    if (!record) {
      this.heartbeats.delete(entry.key);
      this.silences.delete(entry.key);
    } else {
      // Seen now for a live heartbeat; a stored one is no younger than its server timestamp.
      this.heartbeats.set(entry.key, entry.isUpdate ? Date.now() : Math.min(Date.now(), entry.created.getTime()));
      this.silences.set(entry.key, hostStaleAfterMs(record.heartbeatIntervalMs, this.options.staleAfterMs));
    }
    this.scheduleIfChanged();
  }

  private onAnnouncement(entry: KvWatchEntry): void {
    const announcement = entry.operation === "PUT" ? this.signed.announcement(entry) : undefined;
    if (announcement) this.announcements.set(entry.key, announcement);
    else this.announcements.delete(entry.key);
    this.schedule();
  }

  private belief(): Belief {
    const contact = this.options.contact;
    return believe({
      self: this.options.host,
      role: this.options.role,
      networks: this.networks,
      announcements: [...this.announcements.values()],
      grants: this.grants.keysByHost,
      heartbeats: this.heartbeats,
      now: contact ? Math.min(Date.now(), contact.knownUntil()) : Date.now(),
      silentFromAtLeast: contact?.regainedAt() ?? 0,
      staleAfterMs: this.options.staleAfterMs,
      hostStaleAfterMs: this.silences,
    });
  }

  private resync(): void {
    this.resyncDue = true;
    this.schedule();
  }

  private scheduleIfChanged(): void {
    const routes = this.belief().routes;
    if (routes.size !== this.applied.size || [...routes].some(([dst, via]) => this.applied.get(dst) !== via)) this.schedule();
  }

  /** Runs a pass now, or right after the one under way: never two at once, never a change missed. */
  private schedule(): void {
    if (!this.loaded || this.stopped) return;
    // Cut off, the belief is only what the bus said last: the pass waits for contact (onChange schedules it).
    if (this.options.contact && !this.options.contact.inContact()) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.pass()
      .catch((error: Error) => this.options.log(`failed to reconcile routes of host ${this.options.host}: ${error.message}`))
      .finally(() => {
        this.running = undefined;
        if (this.again) {
          this.again = false;
          this.schedule();
        }
      });
  }

  private async pass(): Promise<void> {
    const full = this.resyncDue;
    this.resyncDue = false;
    const refused = await this.apply(full);
    // A refused change means the kernel is not what was last applied (a route someone else owns, one
    // removed behind our back): read it now rather than at the next resync.
    if (refused && !full) await this.apply(true);
  }

  /** One comparison and one batch of changes; true when the kernel refused any of them. */
  private async apply(full: boolean): Promise<boolean> {
    const belief = this.belief();
    let changes: RouteChanges;
    if (full) {
      // One dump of both families.
      changes = routeChanges(await this.nl.listRoutes(), belief.routes);
      this.blocked = changes.blocked;
    } else {
      changes = changesSinceApplied(this.applied, belief.routes);
    }
    this.report(belief);
    const batch: RouteChange[] = [
      ...changes.remove.map((route) => ({ action: "delete" as const, route })),
      ...changes.replace.map((route) => ({ action: "replace" as const, route })),
      ...changes.add.map((route) => ({ action: "add" as const, route })),
    ];
    this.applied = belief.routes;
    if (batch.length === 0) return false;
    let failures: RouteChangeFailure[];
    try {
      failures = await this.nl.changeRoutes(batch);
      countRouteChanges(batch, failures.length);
    } catch (error) {
      // The socket failed mid-batch: what the kernel has is unknown until it is read again.
      this.resyncDue = true;
      throw error;
    }
    // A refusal between full reads means the kernel is not as last applied; the full pass that follows
    // tries again and logs what still fails.
    if (full) {
      for (const { change, error } of failures) {
        if (change.action === "delete" && error.code === "ESRCH") continue; // gone already: what a delete wants
        this.options.log(`failed to ${change.action} route ${describeRoute(change.route)} on host ${this.options.host}: ${error.message}`);
      }
    }
    return failures.length > 0;
  }

  /** Refusals, silent hosts and blocked prefixes are logged when they start, not on every pass. */
  private report(belief: Belief): void {
    const lines = [
      ...belief.refused.map(
        (refusal) => `refused announcement of ${refusal.prefix} (network ${refusal.networkId}) by host ${refusal.host}: ${refusal.reason}`,
      ),
      ...belief.silent.map(
        (host) => `host ${host} has not heartbeaten for over ${this.silences.get(host) ?? this.options.staleAfterMs} ms: its routes are withdrawn until it returns`,
      ),
      ...this.blocked.map(({ dst, protocol }) => `route ${dst} left alone: the kernel already has it with protocol ${protocol}, which Trellis does not own`),
    ];
    setRouteBelief(belief.routes.size, belief.refused.length);
    for (const line of lines) if (!this.reported.has(line)) this.options.log(line);
    this.reported = new Set(lines);
  }
}
