import { Flags, FlagsNew, rt } from "./package.js";
import { invalidArgument } from "./errors.js";
import { afOf, familyOf, formatIp, parseIp, parsePrefix } from "./ip.js";
import { TRELLIS_ROUTE_PROTOCOL, type IpFamily, type Route, type RouteSpec } from "./types.js";

const RT_TABLE_MAIN = rt.RoutingTableClass.MAIN;

// struct rtmsg and the rtattr types Trellis reads and writes (linux/rtnetlink.h).
const RTMSG_LENGTH = 12;
const RTA_DST = 1;
const RTA_OIF = 4;
const RTA_GATEWAY = 5;
const RTA_TABLE = 15;

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

/**
 * One RTM_NEWROUTE message body of a dump → Route, reading only the fields decodeRoute uses: the
 * package's generic attribute parser costs more per route than the kernel's dump does.
 */
export function decodeRouteBytes(body: Buffer): Route | undefined {
  const data: rt.Route = {
    family: body.readUInt8(0),
    dstLen: body.readUInt8(1),
    table: body.readUInt8(4),
    protocol: body.readUInt8(5),
    scope: body.readUInt8(6),
    type: body.readUInt8(7),
  };
  const attrs: rt.RouteAttrs = {};
  for (let offset = RTMSG_LENGTH; offset + 4 <= body.length; ) {
    const length = body.readUInt16LE(offset);
    if (length < 4) break;
    const type = body.readUInt16LE(offset + 2) & 0x3fff;
    const value = body.subarray(offset + 4, offset + length);
    if (type === RTA_DST) attrs.dst = value;
    else if (type === RTA_GATEWAY) attrs.gateway = value;
    else if (type === RTA_OIF) attrs.oif = value.readUInt32LE(0);
    else if (type === RTA_TABLE) attrs.table = value.readUInt32LE(0);
    offset += (length + 3) & ~3;
  }
  return decodeRoute({ kind: "route", data, attrs });
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
export function encodeRoute(describe: string | (() => string), spec: RouteSpec, forDelete = false): EncodedRoute {
  // A batch encodes thousands of routes: the action's text is built only for an error.
  const action = () => (typeof describe === "string" ? describe : describe());
  const gateway = spec.gateway === undefined ? undefined : parseIp(spec.gateway);
  if (spec.gateway !== undefined && !gateway) throw invalidArgument(action(), `invalid gateway ${JSON.stringify(spec.gateway)}: expected an IPv4 or IPv6 address`);
  if (!forDelete && !gateway && spec.linkIndex === undefined) throw invalidArgument(action(), "a route needs a gateway, a link, or both");

  let family: IpFamily;
  const attrs: rt.RouteAttrs = {};
  let dstLen = 0;
  if (spec.dst === "default") {
    family = gateway?.family ?? spec.family ?? 4;
  } else {
    const prefix = parsePrefix(spec.dst);
    if (!prefix) throw invalidArgument(action(), `invalid destination ${JSON.stringify(spec.dst)}: expected "default" or a CIDR such as 10.1.0.0/16`);
    family = prefix.family;
    dstLen = prefix.prefixLength;
    attrs.dst = prefix.bytes;
  }
  if (gateway && gateway.family !== family) throw invalidArgument(action(), `gateway ${spec.gateway} is not in the address family of ${spec.dst}`);
  if (spec.family !== undefined && spec.family !== family) throw invalidArgument(action(), `destination ${spec.dst} is not an IPv${spec.family} prefix`);
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

/** Bytes of a struct nlmsghdr; its sequence number sits at byte 8, its flags at byte 6. */
export const NLMSG_HEADER_LENGTH = 16;

/**
 * One change as a whole netlink request (header, rtmsg, attributes) in one buffer, with sequence number
 * 0 for the sender to fill in. Written by hand: the package's generic attribute stream costs more per
 * route than the kernel's insert does. Host byte order, as netlink wants; Trellis runs on little-endian hosts.
 */
export function encodeChangeRequest(change: RouteChange): Buffer {
  const { data, attrs } = encodeRoute(() => describeChange(change), change.route, change.action === "delete");
  const attributeLength = (value: Buffer | undefined) => (value ? 4 + ((value.length + 3) & ~3) : 0);
  const length = NLMSG_HEADER_LENGTH + RTMSG_LENGTH + attributeLength(attrs.dst) + attributeLength(attrs.gateway) + (attrs.oif === undefined ? 0 : 8);
  const request = Buffer.alloc(length);
  const type = change.action === "delete" ? RTM_DELROUTE : RTM_NEWROUTE;
  const flags = change.action === "delete" ? 0 : FlagsNew.CREATE | (change.action === "add" ? FlagsNew.EXCL : FlagsNew.REPLACE);
  request.writeUInt32LE(length, 0);
  request.writeUInt16LE(type, 4);
  request.writeUInt16LE(Flags.REQUEST | flags, 6);
  let offset = NLMSG_HEADER_LENGTH;
  request.writeUInt8(data.family ?? 0, offset);
  request.writeUInt8(data.dstLen ?? 0, offset + 1);
  request.writeUInt8(data.table ?? 0, offset + 4);
  // encodeRoute sets these as numbers; the type also allows the package's enum names.
  request.writeUInt8(data.protocol as number, offset + 5);
  request.writeUInt8(data.scope as number, offset + 6);
  request.writeUInt8(data.type as number, offset + 7);
  offset += RTMSG_LENGTH;
  const attribute = (kind: number, value: Buffer) => {
    request.writeUInt16LE(4 + value.length, offset);
    request.writeUInt16LE(kind, offset + 2);
    value.copy(request, offset + 4);
    offset += attributeLength(value);
  };
  if (attrs.dst) attribute(RTA_DST, attrs.dst);
  if (attrs.gateway) attribute(RTA_GATEWAY, attrs.gateway);
  if (attrs.oif !== undefined) {
    request.writeUInt16LE(8, offset);
    request.writeUInt16LE(RTA_OIF, offset + 2);
    request.writeUInt32LE(attrs.oif, offset + 4);
  }
  return request;
}
