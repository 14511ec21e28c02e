import { AttrStream, FlagsNew, rt } from "netlink";
import { invalidArgument } from "./errors.js";
import { afOf, familyOf, formatIp, parseIp, parsePrefix } from "./ip.js";
import { TRELLIS_ROUTE_PROTOCOL, type IpFamily, type Route, type RouteSpec } from "./types.js";

const RT_TABLE_MAIN = rt.RoutingTableClass.MAIN;

/** The `netlink` package hands known enum values back as their names ("KERNEL", "LINK"); we want numbers. */
function enumNumber(mapping: Record<string, string | number>, value: unknown): number {
  if (typeof value === "number") return value;
  const mapped = mapping[String(value)];
  return typeof mapped === "number" ? mapped : 0;
}

/** Only unicast routes of the main table: the shape has no room for blackhole/unreachable and friends. */
export function decodeRoute(message: rt.RouteMessage): Route | undefined {
  const { data, attrs } = message;
  const family = familyOf(data.family ?? 0);
  const table = attrs.table ?? data.table ?? 0;
  if (!family || table !== RT_TABLE_MAIN || enumNumber(rt.RouteType, data.type) !== rt.RouteType.UNICAST) return undefined;
  const route: Route = {
    family,
    dst: attrs.dst && data.dstLen ? `${formatIp(attrs.dst)}/${data.dstLen}` : "default",
    protocol: enumNumber(rt.RouteProtocol, data.protocol),
    scope: enumNumber(rt.RouteScope, data.scope),
    table,
  };
  if (attrs.gateway) route.gateway = formatIp(attrs.gateway);
  if (attrs.oif !== undefined) route.linkIndex = attrs.oif;
  return route;
}

interface EncodedRoute {
  data: rt.Route;
  attrs: rt.RouteAttrs;
}

export function describeRoute(spec: RouteSpec): string {
  const via = spec.gateway ? ` via ${spec.gateway}` : "";
  const dev = spec.linkIndex !== undefined ? ` dev ${spec.linkIndex}` : "";
  return `${spec.dst}${via}${dev}`;
}

/**
 * RouteSpec → rtmsg. `forDelete` widens the scope to RT_SCOPE_NOWHERE, which the kernel reads as
 * "any scope", while the protocol stays set so a delete only ever matches a route of that protocol.
 */
export function encodeRoute(action: string, spec: RouteSpec, forDelete = false): EncodedRoute {
  const gateway = spec.gateway === undefined ? undefined : parseIp(spec.gateway);
  if (spec.gateway !== undefined && !gateway) throw invalidArgument(action, `invalid gateway ${JSON.stringify(spec.gateway)}: expected an IPv4 or IPv6 address`);
  if (!forDelete && !gateway && spec.linkIndex === undefined) throw invalidArgument(action, "a route needs a gateway, a link, or both");

  let family: IpFamily;
  const attrs: rt.RouteAttrs = {};
  let dstLen = 0;
  if (spec.dst === "default") {
    family = gateway?.family ?? spec.family ?? 4;
  } else {
    const prefix = parsePrefix(spec.dst);
    if (!prefix) throw invalidArgument(action, `invalid destination ${JSON.stringify(spec.dst)}: expected "default" or a CIDR such as 10.1.0.0/16`);
    family = prefix.family;
    dstLen = prefix.prefixLength;
    attrs.dst = prefix.bytes;
  }
  if (gateway && gateway.family !== family) throw invalidArgument(action, `gateway ${spec.gateway} is not in the address family of ${spec.dst}`);
  if (spec.family !== undefined && spec.family !== family) throw invalidArgument(action, `destination ${spec.dst} is not an IPv${spec.family} prefix`);
  if (gateway) attrs.gateway = gateway.bytes;
  if (spec.linkIndex !== undefined) attrs.oif = spec.linkIndex;

  const scope = forDelete
    ? rt.RouteScope.NOWHERE
    : (spec.scope ?? (gateway ? "universe" : "link")) === "link"
      ? rt.RouteScope.LINK
      : rt.RouteScope.UNIVERSE;
  return {
    data: {
      family: afOf(family),
      dstLen,
      table: RT_TABLE_MAIN,
      protocol: spec.protocol ?? TRELLIS_ROUTE_PROTOCOL,
      scope,
      type: rt.RouteType.UNICAST,
    },
    attrs,
  };
}

/** What the kernel's bare errno means for a route request. */
export const ROUTE_HINTS: Partial<Record<string, string>> = {
  ENODEV: "the route's link does not exist",
  ENETUNREACH: "the gateway is not reachable through any route or link",
};

/** One route request of a batch. */
export interface RouteChange {
  /** add: NLM_F_CREATE|NLM_F_EXCL (EEXIST if there); replace: NLM_F_CREATE|NLM_F_REPLACE (the "ensure" form); delete: only a route of `route.protocol`. */
  action: "add" | "replace" | "delete";
  route: RouteSpec;
}

/** "add route 10.1.0.0/16 via 10.0.0.1": the action an error message names. */
export function describeChange(change: RouteChange): string {
  return `${change.action} route ${describeRoute(change.route)}`;
}

// rtnetlink message types (linux/rtnetlink.h).
export const RTM_NEWROUTE = 24;
export const RTM_DELROUTE = 25;
export const RTM_GETROUTE = 26;

/** The rtmsg and attributes of one change as netlink message bytes, without the 16-byte header. */
export function encodeChangePayload(change: RouteChange): { type: number; flags: number; payload: Buffer } {
  const { data, attrs } = encodeRoute(describeChange(change), change.route, change.action === "delete");
  const stream = new AttrStream();
  rt.formatRouteMessage({ kind: "route", data, attrs }, stream);
  const payload = Buffer.concat(stream.bufs);
  if (change.action === "delete") return { type: RTM_DELROUTE, flags: 0, payload };
  return { type: RTM_NEWROUTE, flags: FlagsNew.CREATE | (change.action === "add" ? FlagsNew.EXCL : FlagsNew.REPLACE), payload };
}
