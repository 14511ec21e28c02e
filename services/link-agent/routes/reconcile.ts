import { TRELLIS_ROUTE_PROTOCOL, type Route, type RouteSpec } from "../../../libs/netlink/index.js";
import type { RouteAnnouncement } from "../../../libs/proto/gen/trellis/v1/routes.js";
import { grantKey, type GrantKey } from "./grants.js";
import { canonicalPrefix, familyOfAddress } from "./prefixes.js";

// Pure decisions of route distribution: which announcements to believe, and what to change in the kernel.

export interface BeliefInput {
  self: string;
  /** Upstream agents install the routes of every L3 network; host agents only of networks they have. */
  role: "host" | "upstream";
  /** L3/L3S networks present on this host. */
  networks: Set<string>;
  announcements: RouteAnnouncement[];
  /** Per host, what IPAM gave it. */
  grants: Map<string, Set<GrantKey>>;
  /** Per host, when its last heartbeat was seen (ms since the epoch). */
  heartbeats: Map<string, number>;
  now: number;
  /** No host counts as silent from before this (ms since the epoch): when contact with the bus came back. */
  silentFromAtLeast?: number;
  staleAfterMs: number;
  /** Per host, a longer silence it may keep, from the heartbeat interval it reports. */
  hostStaleAfterMs?: Map<string, number>;
}

export interface Refusal {
  host: string;
  networkId: string;
  prefix: string;
  reason: string;
}

export interface Belief {
  /** Destination prefix → next hop. */
  routes: Map<string, string>;
  refused: Refusal[];
  /** Hosts whose announcements are set aside because their heartbeat is too old. */
  silent: string[];
}

/**
 * Each announcement's prefixes in canonical form with their family (undefined: not a prefix), worked out
 * once per received announcement: beliefs are recomputed on every pass and every staleness check, over
 * thousands of prefixes, and an announcement object is never changed once decoded.
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

export function believe(input: BeliefInput): Belief {
  const routes = new Map<string, string>();
  const winners = new Map<string, string>();
  const refused: Refusal[] = [];
  const silent: string[] = [];
  // Sorted, so that when two hosts claim one prefix the same one wins on every agent.
  const announcements = [...input.announcements].sort((a, b) => a.host.localeCompare(b.host));
  for (const announcement of announcements) {
    if (announcement.host === input.self) continue;
    const heard = input.heartbeats.get(announcement.host);
    const seen = heard === undefined ? undefined : Math.max(heard, input.silentFromAtLeast ?? 0);
    if (seen === undefined || input.now - seen > (input.hostStaleAfterMs?.get(announcement.host) ?? input.staleAfterMs)) {
      silent.push(announcement.host);
      continue;
    }
    const granted = input.grants.get(announcement.host) ?? new Set<GrantKey>();
    const nextHops = new Map(announcement.nextHops.map((nextHop) => [familyOfAddress(nextHop), nextHop]));
    const forms = canonicalPrefixesOf(announcement);
    announcement.prefixes.forEach(({ networkId, prefix: announced }, i) => {
      if (input.role === "host" && !input.networks.has(networkId)) return;
      const form = forms[i];
      let reason: string | undefined;
      if (!form) {
        reason = "not a prefix";
      } else if (!granted.has(grantKey(networkId, form.prefix))) {
        reason = `IPAM has not given ${form.prefix} to host ${announcement.host} in network ${networkId}`;
      } else if (!nextHops.has(form.family)) {
        reason = `host ${announcement.host} announces no IPv${form.family} next hop (it has ${JSON.stringify(announcement.nextHops)})`;
      } else if (winners.has(form.prefix)) {
        reason = `also announced by host ${winners.get(form.prefix)}, which wins`;
      } else {
        routes.set(form.prefix, nextHops.get(form.family)!);
        winners.set(form.prefix, announcement.host);
      }
      if (reason) refused.push({ host: announcement.host, networkId, prefix: announced, reason });
    });
  }
  return { routes, refused, silent };
}

export interface RouteChanges {
  add: RouteSpec[];
  /** Routes of ours whose next hop changed: replaced in place, so traffic never lacks a route. */
  replace: RouteSpec[];
  remove: RouteSpec[];
  /** Wanted prefixes the kernel already routes with another protocol: never touched (principle 2). */
  blocked: { dst: string; protocol: number }[];
}

/** Compares the kernel's routes with the wanted ones; only routes of TRELLIS_ROUTE_PROTOCOL are ever changed. */
export function routeChanges(kernel: Route[], wanted: Map<string, string>): RouteChanges {
  const changes: RouteChanges = { add: [], replace: [], remove: [], blocked: [] };
  const owned = new Map<string, Route[]>();
  const foreign = new Map<string, number>();
  for (const route of kernel) {
    if (route.protocol === TRELLIS_ROUTE_PROTOCOL) owned.set(route.dst, [...(owned.get(route.dst) ?? []), route]);
    else foreign.set(route.dst, route.protocol);
  }
  const kept = new Set<Route>();
  for (const [dst, nextHop] of wanted) {
    const mine = owned.get(dst) ?? [];
    const right = mine.find((route) => route.gateway === nextHop);
    if (right) {
      kept.add(right);
    } else if (mine.length > 0) {
      kept.add(mine[0]);
      changes.replace.push({ dst, gateway: nextHop });
    } else if (foreign.has(dst)) {
      changes.blocked.push({ dst, protocol: foreign.get(dst)! });
    } else {
      changes.add.push({ dst, gateway: nextHop });
    }
  }
  for (const route of kernel.filter((route) => route.protocol === TRELLIS_ROUTE_PROTOCOL && !kept.has(route))) {
    changes.remove.push({ dst: route.dst, gateway: route.gateway, linkIndex: route.linkIndex, family: route.family });
  }
  return changes;
}

/**
 * The changes from the routes last applied to the wanted ones, without reading the kernel: for the passes
 * between full reads. A prefix new to us is added with NLM_F_EXCL, so a route someone else owns is refused,
 * never overwritten (principle 2).
 */
export function changesSinceApplied(applied: Map<string, string>, wanted: Map<string, string>): RouteChanges {
  const changes: RouteChanges = { add: [], replace: [], remove: [], blocked: [] };
  for (const [dst, nextHop] of wanted) {
    const before = applied.get(dst);
    if (before === undefined) changes.add.push({ dst, gateway: nextHop });
    else if (before !== nextHop) changes.replace.push({ dst, gateway: nextHop });
  }
  for (const [dst, nextHop] of applied) if (!wanted.has(dst)) changes.remove.push({ dst, gateway: nextHop });
  return changes;
}
