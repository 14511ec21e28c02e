import { TRELLIS_ROUTE_PROTOCOL, type Route, type RouteSpec } from "../../../libs/netlink/index.js";

// Pure decisions of route distribution: what to change in the kernel for the routes believed (belief.ts).

export interface RouteChanges {
  add: RouteSpec[];
  /** Routes of ours whose next hop changed: replaced in place, so traffic never lacks a route. */
  replace: RouteSpec[];
  remove: RouteSpec[];
  /** Wanted prefixes the kernel already routes with another protocol: never touched (principle 2). */
  blocked: { dst: string; protocol: number }[];
}

/** Compares the kernel's routes with the wanted ones; only routes of TRELLIS_ROUTE_PROTOCOL are ever changed. */
export function routeChanges(kernel: Route[], wanted: ReadonlyMap<string, string>): RouteChanges {
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
 * The changes from the routes last applied to the wanted ones at the prefixes whose wanted route changed, without
 * reading the kernel: for the passes between full reads, at a cost of the changed prefixes only. A prefix new to us
 * is added with NLM_F_EXCL, so a route someone else owns is refused, never overwritten (principle 2).
 */
export function changesAt(applied: ReadonlyMap<string, string>, wanted: ReadonlyMap<string, string>, changed: Iterable<string>): RouteChanges {
  const changes: RouteChanges = { add: [], replace: [], remove: [], blocked: [] };
  for (const dst of changed) {
    const before = applied.get(dst);
    const nextHop = wanted.get(dst);
    if (nextHop === undefined) {
      if (before !== undefined) changes.remove.push({ dst, gateway: before });
    } else if (before === undefined) changes.add.push({ dst, gateway: nextHop });
    else if (before !== nextHop) changes.replace.push({ dst, gateway: nextHop });
  }
  return changes;
}
