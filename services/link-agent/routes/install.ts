import type { KV, KvWatchEntry } from "@nats-io/kv";
import { describeRoute, openNetlink, type NetlinkHandle, type RouteChange, type RouteChangeFailure } from "../../../libs/netlink/index.js";
import type { Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import { FollowedBucket } from "../../../libs/bus/follow.js";
import { Buckets, hostStaleAfterMs, IPAM_BLOCKS_FILTER } from "../../../libs/bus/subjects.js";
import type { BusContact } from "../../../libs/bus/contact.js";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { SignedRecordFilter } from "../../../libs/tls/signed-records.js";
import { Grants, routedNetworkIds, type GrantedPrefix } from "./grants.js";
import { RouteBelief } from "./belief.js";
import { changesAt, routeChanges, type RouteChanges } from "./reconcile.js";
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
 * changes nothing right and drift is repaired; the passes between send only the routes whose belief
 * changed, so one new announcement costs that host's prefixes and the routes they change, not a table
 * dump nor a look at every other host (belief.ts).
 */
export class RouteInstaller {
  private readonly grants: Grants;
  private readonly belief: RouteBelief;
  /** When each host's heartbeat was last seen: for the heartbeat-age metric. */
  private readonly heartbeats = new Map<string, number>();
  /** Every network by bucket key (its name): every host has every network. */
  private readonly allNetworks = new Map<string, Network>();
  private running: Promise<void> | undefined;
  private again = false;
  /** Set when the next pass must read the kernel: at start, on the resync timer, after a refused change. */
  private resyncDue = true;
  /** What the last pass asked the kernel for: destination prefix → next hop. */
  private applied = new Map<string, string>();
  /** Lines of the wanted prefixes the last full pass found routed by someone else: logged when they start. */
  private blocked = new Set<string>();
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
    const contact = options.contact;
    this.belief = new RouteBelief({
      self: options.host,
      role: options.role,
      staleAfterMs: options.staleAfterMs,
      grants: this.grants.byHost,
      clock: {
        now: () => (contact ? Math.min(Date.now(), contact.knownUntil()) : Date.now()),
        silentFromAtLeast: () => contact?.regainedAt() ?? 0,
      },
      log: options.log,
    });
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
        if (!inContact) return;
        installer.belief.contactRegained();
        installer.schedule();
      });
      if (unsubscribe) installer.stops.push(unsubscribe);
    } catch (error) {
      await installer.stop();
      throw new Error(`failed to start the route installer of host ${options.host}: ${(error as Error).message}`);
    }
    installer.loaded = true;
    await installer.settled();
    installer.timers = [
      // Heartbeats age without any event: look often (a look at the earliest window's end), run a pass only if one ended.
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
  believed(): ReadonlyMap<string, string> {
    this.belief.refresh();
    return this.belief.routes;
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
    this.belief.setNetworks(routedNetworkIds(this.allNetworks.values()));
    this.schedule();
  }

  private onGrant(entry: KvWatchEntry): void {
    for (const host of this.grants.apply(entry)) this.belief.grantsChanged(host);
    this.schedule();
  }

  private onHeartbeat(entry: KvWatchEntry): void {
    const record = entry.operation === "PUT" ? this.signed.heartbeat(entry) : undefined;
    if (!record) {
      this.heartbeats.delete(entry.key);
      this.belief.forgetHeartbeat(entry.key);
    } else {
      // Seen now for a live heartbeat; a stored one is no younger than its server timestamp.
      const seen = entry.isUpdate ? Date.now() : Math.min(Date.now(), entry.created.getTime());
      this.heartbeats.set(entry.key, seen);
      // How long it may be silent: at least staleAfterMs, longer for a host that heartbeats less often.
      this.belief.heard(entry.key, seen, hostStaleAfterMs(record.heartbeatIntervalMs, this.options.staleAfterMs));
    }
    this.scheduleIfChanged();
  }

  private onAnnouncement(entry: KvWatchEntry): void {
    const announcement = entry.operation === "PUT" ? this.signed.announcement(entry) : undefined;
    this.belief.setAnnouncement(entry.key, announcement);
    this.schedule();
  }

  private resync(): void {
    this.resyncDue = true;
    this.schedule();
  }

  /** A pass only when a heartbeat or the clock changed a host's liveness: a live host's heartbeat costs no pass. */
  private scheduleIfChanged(): void {
    this.belief.expire();
    if (this.belief.pending()) this.schedule();
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
    let changes: RouteChanges;
    if (full) {
      // One dump of both families. The belief is refreshed after it, so that it is no older than the dump.
      const kernel = await this.nl.listRoutes();
      this.belief.refresh();
      this.belief.takeChanged();
      changes = routeChanges(kernel, this.belief.routes);
      this.applied = new Map(this.belief.routes);
      this.reportBlocked(changes.blocked);
    } else {
      this.belief.refresh();
      const changed = this.belief.takeChanged();
      changes = changesAt(this.applied, this.belief.routes, changed);
      for (const dst of changed) {
        const nextHop = this.belief.routes.get(dst);
        if (nextHop === undefined) this.applied.delete(dst);
        else this.applied.set(dst, nextHop);
      }
    }
    setRouteBelief(this.belief.routes.size, this.belief.refused);
    const batch: RouteChange[] = [
      ...changes.remove.map((route) => ({ action: "delete" as const, route })),
      ...changes.replace.map((route) => ({ action: "replace" as const, route })),
      ...changes.add.map((route) => ({ action: "add" as const, route })),
    ];
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

  /** Blocked prefixes are logged when they start, not on every full pass (the belief logs its refusals and silences so). */
  private reportBlocked(blocked: RouteChanges["blocked"]): void {
    const lines = new Set(blocked.map(({ dst, protocol }) => `route ${dst} left alone: the kernel already has it with protocol ${protocol}, which Trellis does not own`));
    for (const line of lines) if (!this.blocked.has(line)) this.options.log(line);
    this.blocked = lines;
  }
}
