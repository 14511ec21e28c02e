import TinyQueue from "tinyqueue";
import type { RouteAnnouncement } from "../../../libs/proto/gen/trellis/v1/routes.js";
import type { HostGrants } from "./grants.js";
import { canonicalPrefix, familyOfAddress } from "./prefixes.js";

// Which announcements a route installer believes, kept up to date one host at a time: a change to one host's
// announcement, grants or liveness re-derives that host's claims only, and re-decides only the prefixes whose
// claims changed. What one announcement costs an installer does not grow with the number of hosts.

export interface BeliefOptions {
  self: string;
  /** Upstream agents install the routes of every L3 network; host agents only of networks they have. */
  role: "host" | "upstream";
  /** How long a host may be silent when its heartbeat says nothing longer (or there is none). */
  staleAfterMs: number;
  /** Per host, what IPAM gave it (Grants.byHost). */
  grants: ReadonlyMap<string, HostGrants>;
  clock: BeliefClock;
  /** Refusals and silences, each logged when it starts. */
  log: (line: string) => void;
}

export interface BeliefClock {
  /** Up to when silence is known to be real (ms since the epoch): a host's silence is judged at this moment. */
  now(): number;
  /** No host counts as silent from before this (ms since the epoch): when contact with the bus came back. */
  silentFromAtLeast(): number;
}

export interface Refusal {
  host: string;
  networkId: string;
  /** As announced, not canonical. */
  prefix: string;
  reason: string;
}

/** What a live host announces and may: one next hop per canonical prefix. */
interface Claim {
  networkId: string;
  announced: string;
  nextHop: string;
}

interface HostState {
  announcement?: RouteAnnouncement;
  /** When its last heartbeat was seen (ms since the epoch); undefined: none. */
  heard?: number;
  /** How long it may be silent. */
  silenceMs: number;
  alive: boolean;
  /** The deadline of its one current entry in the expiry queue; undefined while it has none. */
  expiresAt?: number;
  /** Its believable claims by canonical prefix, as last derived. */
  claims: Map<string, Claim>;
  /** The networks its announcement names, as last derived (an index for network changes). */
  networks: Set<string>;
  /** Lines of its refusals that do not depend on another host's claims, as last derived. */
  refusals: Set<string>;
  silentReported: boolean;
}

/** The claims of one prefix: every live host that may announce it; the first host by name wins. */
interface PrefixState {
  claimants: Map<string, Claim>;
  /** Lines of the losers' refusals; none while it has one claimant, as nearly every prefix has. */
  refusals: Set<string> | undefined;
}

interface Expiry {
  host: string;
  deadline: number;
}

/**
 * Each announcement's prefixes in canonical form with their family (undefined: not a prefix), worked out once per
 * received announcement: a host's claims are derived again whenever its grants or liveness change, and an
 * announcement object is never changed once decoded.
 */
const canonicalForms = new WeakMap<RouteAnnouncement, ({ prefix: string; family: 4 | 6 } | undefined)[]>();

function canonicalPrefixesOf(announcement: RouteAnnouncement): ({ prefix: string; family: 4 | 6 } | undefined)[] {
  let forms = canonicalForms.get(announcement);
  if (!forms) {
    forms = announcement.prefixes.map(({ prefix: announced }) => {
      const prefix = canonicalPrefix(announced);
      // A canonical prefix is valid: a colon tells IPv6 without parsing it again.
      return prefix === undefined ? undefined : { prefix, family: prefix.includes(":") ? (6 as const) : (4 as const) };
    });
    canonicalForms.set(announcement, forms);
  }
  return forms;
}

/** The claim it had, when nothing in it changed: a host's claims are derived again on each of its announcements. */
function sameOrNew(was: Claim | undefined, networkId: string, announced: string, nextHop: string): Claim {
  return was && was.networkId === networkId && was.announced === announced && was.nextHop === nextHop ? was : { networkId, announced, nextHop };
}

export function refusalLine(refusal: Refusal): string {
  return `refused announcement of ${refusal.prefix} (network ${refusal.networkId}) by host ${refusal.host}: ${refusal.reason}`;
}

export class RouteBelief {
  private readonly hosts = new Map<string, HostState>();
  private readonly prefixes = new Map<string, PrefixState>();
  /** Destination prefix → next hop: what the installer wants in the kernel. */
  private readonly wanted = new Map<string, string>();
  /** Prefixes whose wanted next hop changed (or went) since the last takeChanged. */
  private changed = new Set<string>();
  /** Hosts to derive again at the next refresh: changes arrive in bursts (a start, a reconnect), derived once. */
  private readonly dirty = new Set<string>();
  /** Per network id, the hosts whose announcement names it. */
  private readonly announcersOf = new Map<string, Set<string>>();
  /** L3/L3S networks present on this host. */
  private networks = new Set<string>();
  private readonly expiries = new TinyQueue<Expiry>([], (a, b) => a.deadline - b.deadline);
  private refusedCount = 0;

  constructor(private readonly options: BeliefOptions) {}

  /** Destination prefix → next hop, as of the last refresh. */
  get routes(): ReadonlyMap<string, string> {
    return this.wanted;
  }

  /** Announcements refused right now, as of the last refresh. */
  get refused(): number {
    return this.refusedCount;
  }

  setAnnouncement(host: string, announcement: RouteAnnouncement | undefined): void {
    const state = this.stateOf(host);
    state.announcement = announcement;
    this.dirty.add(host);
  }

  /** The host's grants changed (Grants.apply). */
  grantsChanged(host: string): void {
    this.dirty.add(host);
  }

  /** The L3/L3S networks present on this host: on a host agent, only their prefixes are believed. */
  setNetworks(networks: Set<string>): void {
    const before = this.networks;
    this.networks = networks;
    if (this.options.role !== "host") return;
    for (const id of networks) if (!before.has(id)) this.markAnnouncersOf(id);
    for (const id of before) if (!networks.has(id)) this.markAnnouncersOf(id);
  }

  /** A heartbeat of `host` seen at `at`, which may stay silent `silenceMs` before its routes are withdrawn. */
  heard(host: string, at: number, silenceMs: number): void {
    const state = this.stateOf(host);
    state.heard = at;
    state.silenceMs = silenceMs;
    this.judge(host, state);
  }

  /** The host's heartbeat is gone: it is silent. */
  forgetHeartbeat(host: string): void {
    const state = this.hosts.get(host);
    if (!state) return;
    state.heard = undefined;
    state.silenceMs = this.options.staleAfterMs;
    this.judge(host, state);
    // Derived again even if it was silent already: a host with neither heartbeat nor announcement is forgotten then.
    this.dirty.add(host);
  }

  /** Marks silent every host whose window ended by the clock's now; cheap when none did. */
  expire(): void {
    const now = this.options.clock.now();
    for (let next = this.expiries.peek(); next && next.deadline < now; next = this.expiries.peek()) {
      this.expiries.pop();
      const state = this.hosts.get(next.host);
      // An entry superseded by a later heartbeat (each pushes its own) is skipped.
      if (state && state.expiresAt === next.deadline) this.judge(next.host, state);
    }
  }

  /** Contact with the bus came back: every host's window starts again from then (once per reconnect, not per change). */
  contactRegained(): void {
    for (const [host, state] of this.hosts) this.judge(host, state);
  }

  /** True when a refresh would change something: hosts to derive again, or wanted routes not yet taken. */
  pending(): boolean {
    return this.dirty.size > 0 || this.changed.size > 0;
  }

  /** Derives again the hosts that changed since the last refresh, and re-decides their prefixes. */
  refresh(): void {
    this.expire();
    for (const host of this.dirty) this.derive(host);
    this.dirty.clear();
  }

  /** The prefixes whose wanted route changed since the last call. */
  takeChanged(): Set<string> {
    const changed = this.changed;
    this.changed = new Set();
    return changed;
  }

  private stateOf(host: string): HostState {
    let state = this.hosts.get(host);
    if (!state) {
      state = { silenceMs: this.options.staleAfterMs, alive: false, claims: new Map(), networks: new Set(), refusals: new Set(), silentReported: false };
      this.hosts.set(host, state);
    }
    return state;
  }

  private markAnnouncersOf(networkId: string): void {
    for (const host of this.announcersOf.get(networkId) ?? []) this.dirty.add(host);
  }

  /** Whether the host is alive now; a change of mind makes it dirty. Keeps one expiry queued while it is alive. */
  private judge(host: string, state: HostState): void {
    const clock = this.options.clock;
    const seen = state.heard === undefined ? undefined : Math.max(state.heard, clock.silentFromAtLeast());
    const deadline = seen === undefined ? undefined : seen + state.silenceMs;
    const alive = deadline !== undefined && deadline >= clock.now();
    if (alive && deadline !== state.expiresAt) this.expiries.push({ host, deadline });
    state.expiresAt = alive ? deadline : undefined;
    if (alive !== state.alive) {
      state.alive = alive;
      this.dirty.add(host);
    }
  }

  /** Works out the host's claims and own refusals again, then re-decides the prefixes whose claims changed. */
  private derive(host: string): void {
    const state = this.hosts.get(host);
    if (!state) return;
    const { claims, refusals, networks, silent } = this.claimsOf(host, state);
    this.reindexNetworks(host, state.networks, networks);
    state.networks = networks;
    for (const [prefix, claim] of state.claims) {
      const now = claims.get(prefix);
      if (!now || now.nextHop !== claim.nextHop || now.networkId !== claim.networkId || now.announced !== claim.announced) this.unclaim(prefix, host);
    }
    const before = state.claims;
    state.claims = claims;
    for (const [prefix, claim] of claims) {
      const was = before.get(prefix);
      if (!was || was.nextHop !== claim.nextHop || was.networkId !== claim.networkId || was.announced !== claim.announced) this.claim(prefix, host, claim);
    }
    this.refusedCount += refusals.size - state.refusals.size;
    for (const line of refusals) if (!state.refusals.has(line)) this.options.log(line);
    state.refusals = refusals;
    if (silent && !state.silentReported) {
      this.options.log(`host ${host} has not heartbeaten for over ${state.silenceMs} ms: its routes are withdrawn until it returns`);
    }
    state.silentReported = silent;
    if (!state.announcement && state.heard === undefined) this.hosts.delete(host);
  }

  private claimsOf(host: string, state: HostState): { claims: Map<string, Claim>; refusals: Set<string>; networks: Set<string>; silent: boolean } {
    const claims = new Map<string, Claim>();
    const refusals = new Set<string>();
    const announcement = state.announcement;
    if (!announcement || host === this.options.self) return { claims, refusals, networks: new Set(), silent: false };
    const networks = new Set(announcement.prefixes.map(({ networkId }) => networkId));
    if (!state.alive) return { claims, refusals, networks, silent: true };
    const granted = this.options.grants.get(host);
    const nextHops = new Map(announcement.nextHops.map((nextHop) => [familyOfAddress(nextHop), nextHop]));
    const forms = canonicalPrefixesOf(announcement);
    announcement.prefixes.forEach(({ networkId, prefix: announced }, i) => {
      if (this.options.role === "host" && !this.networks.has(networkId)) return;
      const form = forms[i];
      let reason: string | undefined;
      if (!form) reason = "not a prefix";
      else if (!granted?.get(networkId)?.has(form.prefix)) reason = `IPAM has not given ${form.prefix} to host ${host} in network ${networkId}`;
      else if (!nextHops.has(form.family)) reason = `host ${host} announces no IPv${form.family} next hop (it has ${JSON.stringify(announcement.nextHops)})`;
      else if (claims.has(form.prefix)) reason = `also announced by host ${host}, which wins`;
      else claims.set(form.prefix, sameOrNew(state.claims.get(form.prefix), networkId, announced, nextHops.get(form.family)!));
      if (reason) refusals.add(refusalLine({ host, networkId, prefix: announced, reason }));
    });
    return { claims, refusals, networks, silent: false };
  }

  private reindexNetworks(host: string, before: Set<string>, after: Set<string>): void {
    for (const id of before) {
      if (after.has(id)) continue;
      const hosts = this.announcersOf.get(id);
      hosts?.delete(host);
      if (hosts?.size === 0) this.announcersOf.delete(id);
    }
    for (const id of after) {
      let hosts = this.announcersOf.get(id);
      if (!hosts) this.announcersOf.set(id, (hosts = new Set()));
      hosts.add(host);
    }
  }

  private claim(prefix: string, host: string, claim: Claim): void {
    let state = this.prefixes.get(prefix);
    if (!state) this.prefixes.set(prefix, (state = { claimants: new Map(), refusals: undefined }));
    state.claimants.set(host, claim);
    this.decide(prefix, state);
  }

  private unclaim(prefix: string, host: string): void {
    const state = this.prefixes.get(prefix);
    if (!state?.claimants.delete(host)) return;
    this.decide(prefix, state);
  }

  /**
   * The winner of a prefix is the first claimant by name, the same on every agent; the others are refused. Names
   * compare by their UTF-16 code units, not by locale (localeCompare), which could order them differently on an
   * agent with another locale and pages in ICU's collation data (2.7 MB of RSS).
   */
  private decide(prefix: string, state: PrefixState): void {
    let winner: string | undefined;
    for (const host of state.claimants.keys()) if (winner === undefined || host < winner) winner = host;
    const nextHop = winner === undefined ? undefined : state.claimants.get(winner)!.nextHop;
    if (this.wanted.get(prefix) !== nextHop) {
      if (nextHop === undefined) this.wanted.delete(prefix);
      else this.wanted.set(prefix, nextHop);
      this.changed.add(prefix);
    }
    const refusals = state.claimants.size > 1 ? new Set<string>() : undefined;
    for (const [host, claim] of state.claimants) {
      if (host !== winner) refusals!.add(refusalLine({ host, networkId: claim.networkId, prefix: claim.announced, reason: `also announced by host ${winner}, which wins` }));
    }
    this.refusedCount += (refusals?.size ?? 0) - (state.refusals?.size ?? 0);
    for (const line of refusals ?? []) if (!state.refusals?.has(line)) this.options.log(line);
    state.refusals = refusals;
    if (state.claimants.size === 0) this.prefixes.delete(prefix);
  }
}
