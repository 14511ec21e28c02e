import { createRtNetlink, type RtNetlinkSocket } from "./package.js";
import type { Attributes } from "@opentelemetry/api";
import { withSpan } from "../telemetry/tracing.js";
import { measuredNetlink } from "../metrics/agent.js";
import * as addresses from "./addresses.js";
import { netlinkError } from "./errors.js";
import * as links from "./links.js";
import { inNamespace } from "./netns.js";
import { RouteSocket, type RouteChangeFailure } from "./route-socket.js";
import type { RouteChange } from "./routes.js";
import type { AddAddressOptions, Address, IpFamily, IpvlanFlag, IpvlanMode, Link, Route, RouteSpec } from "./types.js";

/** One rtnetlink socket bound to one network namespace; every call is a span. */
export interface NetlinkHandle {
  /** Name under /run/netns or absolute path; undefined = the namespace the process runs in. */
  readonly netns: string | undefined;
  listLinks(): Promise<Link[]>;
  /** undefined when no link has that name. */
  getLink(name: string): Promise<Link | undefined>;
  createDummy(name: string): Promise<Link>;
  createVlan(name: string, parentIndex: number, vlanId: number): Promise<Link>;
  /**
   * Creates an ipvlan on `parentIndex` (a link of this handle's namespace). With `targetNetns` the link is
   * born inside that namespace under `name` (IFLA_NET_NS_FD in the same request): no rename, no move, and
   * no window in which a half-made link sits in the host namespace.
   * Mode and flag belong to the parent (the kernel's ipvlan "port"): a new ipvlan with another mode/flag
   * switches every existing ipvlan of that parent too (seen in the lab), so callers must not mix them.
   */
  createIpvlan(name: string, parentIndex: number, mode: IpvlanMode, flag: IpvlanFlag, targetNetns?: string): Promise<void>;
  setUp(index: number): Promise<void>;
  /** IFLA_IFALIAS: how the agent marks links it created, so it deletes only those. */
  setAlias(index: number, alias: string): Promise<void>;
  renameLink(index: number, name: string): Promise<void>;
  deleteLink(index: number): Promise<void>;
  listAddresses(linkIndex?: number): Promise<Address[]>;
  addAddress(linkIndex: number, cidr: string, options?: AddAddressOptions): Promise<void>;
  deleteAddress(linkIndex: number, cidr: string): Promise<void>;
  /** Unicast routes of the main table. */
  listRoutes(family?: IpFamily): Promise<Route[]>;
  /** NLM_F_CREATE|NLM_F_EXCL: EEXIST if the route is already there. */
  addRoute(route: RouteSpec): Promise<void>;
  /** NLM_F_CREATE|NLM_F_REPLACE: the "ensure" form. */
  replaceRoute(route: RouteSpec): Promise<void>;
  /** Matches only routes of `route.protocol` (default TRELLIS_ROUTE_PROTOCOL): never deletes what others own. */
  deleteRoute(route: RouteSpec): Promise<void>;
  /**
   * Applies many route changes in order, many per datagram; returns those the kernel refused (the rest
   * are in effect). Rejects only if the socket fails.
   */
  changeRoutes(changes: RouteChange[]): Promise<RouteChangeFailure[]>;
  close(): void;
}

/** Opens a socket in `netns`; it stays bound to that namespace for its whole life. */
export async function openNetlink(netns?: string): Promise<NetlinkHandle> {
  return withSpan("netlink.open", { netns }, async () => {
    const open = () => {
      const socket = createSocket(netns);
      try {
        return { socket, routeSocket: createRouteSocket(netns) };
      } catch (error) {
        socket.socket.close();
        throw error;
      }
    };
    const { socket, routeSocket } = netns === undefined ? open() : inNamespace(netns, open);
    return new Handle(socket, routeSocket, netns);
  });
}

function createSocket(netns: string | undefined): RtNetlinkSocket {
  try {
    return createRtNetlink();
  } catch (cause) {
    throw netlinkError(`open rtnetlink socket${netns === undefined ? "" : ` in network namespace ${netns}`}`, cause);
  }
}

// Routes go through a socket of their own: batched writes and dumps (see route-socket.ts).
function createRouteSocket(netns: string | undefined): RouteSocket {
  try {
    return RouteSocket.open();
  } catch (cause) {
    throw netlinkError(`open rtnetlink route socket${netns === undefined ? "" : ` in network namespace ${netns}`}`, cause);
  }
}

class Handle implements NetlinkHandle {
  constructor(
    private readonly socket: RtNetlinkSocket,
    private readonly routeSocket: RouteSocket,
    readonly netns: string | undefined,
  ) {}

  private span<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
    return withSpan(`netlink.${name}`, { netns: this.netns, ...attributes }, () => measuredNetlink(name, fn));
  }

  listLinks(): Promise<Link[]> {
    return this.span("link.list", {}, () => links.listLinks(this.socket));
  }

  getLink(name: string): Promise<Link | undefined> {
    return this.span("link.get", { "link.name": name }, () => links.getLink(this.socket, name));
  }

  createDummy(name: string): Promise<Link> {
    return this.span("link.create", { "link.name": name, "link.kind": "dummy" }, async () => {
      await links.createLink(this.socket, { name, kind: "dummy", linkinfo: links.encodeKindInfo("dummy") }, `create dummy link ${name}`);
      return this.created(name);
    });
  }

  createVlan(name: string, parentIndex: number, vlanId: number): Promise<Link> {
    const attributes = { "link.name": name, "link.kind": "vlan", "link.parent_index": parentIndex, "vlan.id": vlanId };
    return this.span("link.create", attributes, async () => {
      const action = `create vlan link ${name} (id ${vlanId}) on link ${parentIndex}`;
      links.validateVlanId(action, vlanId);
      await links.createLink(this.socket, { name, kind: "vlan", parentIndex, linkinfo: links.encodeVlanInfo(vlanId) }, action);
      return this.created(name);
    });
  }

  createIpvlan(name: string, parentIndex: number, mode: IpvlanMode, flag: IpvlanFlag, targetNetns?: string): Promise<void> {
    const attributes = {
      "link.name": name,
      "link.kind": "ipvlan",
      "link.parent_index": parentIndex,
      "ipvlan.mode": mode,
      "ipvlan.flag": flag,
      target_netns: targetNetns,
    };
    return this.span("link.create", attributes, async () => {
      const where = targetNetns === undefined ? "" : ` in network namespace ${targetNetns}`;
      const action = `create ipvlan link ${name}${where} (${mode} ${flag}) on link ${parentIndex}`;
      links.validateIpvlan(action, mode, flag);
      const linkinfo = links.encodeIpvlanInfo(mode, flag);
      await links.createLink(this.socket, { name, kind: "ipvlan", parentIndex, linkinfo, targetNetns }, action);
    });
  }

  // The create request does not echo the new link; read it back so callers get its index.
  private async created(name: string): Promise<Link> {
    const link = await links.getLink(this.socket, name);
    if (!link) throw netlinkError(`read back link ${name}`, Object.assign(new Error("vanished after creation"), { code: "ENODEV" }));
    return link;
  }

  setUp(index: number): Promise<void> {
    return this.span("link.set_up", { "link.index": index }, () => links.setUp(this.socket, index));
  }

  setAlias(index: number, alias: string): Promise<void> {
    return this.span("link.set_alias", { "link.index": index, "link.alias": alias }, () => links.setAlias(this.socket, index, alias));
  }

  renameLink(index: number, name: string): Promise<void> {
    return this.span("link.rename", { "link.index": index, "link.name": name }, () => links.renameLink(this.socket, index, name));
  }

  deleteLink(index: number): Promise<void> {
    return this.span("link.delete", { "link.index": index }, () => links.deleteLink(this.socket, index));
  }

  listAddresses(linkIndex?: number): Promise<Address[]> {
    return this.span("address.list", linkIndex === undefined ? {} : { "link.index": linkIndex }, () =>
      addresses.listAddresses(this.socket, linkIndex),
    );
  }

  addAddress(linkIndex: number, cidr: string, options?: AddAddressOptions): Promise<void> {
    return this.span("address.add", { "link.index": linkIndex, cidr, nodad: options?.nodad === true }, () =>
      addresses.addAddress(this.socket, linkIndex, cidr, options),
    );
  }

  deleteAddress(linkIndex: number, cidr: string): Promise<void> {
    return this.span("address.delete", { "link.index": linkIndex, cidr }, () => addresses.deleteAddress(this.socket, linkIndex, cidr));
  }

  listRoutes(family?: IpFamily): Promise<Route[]> {
    return this.span("route.list", family === undefined ? {} : { family }, () => this.routeSocket.listRoutes(family));
  }

  addRoute(route: RouteSpec): Promise<void> {
    return this.span("route.add", routeAttributes(route), () => this.changeOne({ action: "add", route }));
  }

  replaceRoute(route: RouteSpec): Promise<void> {
    return this.span("route.replace", routeAttributes(route), () => this.changeOne({ action: "replace", route }));
  }

  deleteRoute(route: RouteSpec): Promise<void> {
    return this.span("route.delete", routeAttributes(route), () => this.changeOne({ action: "delete", route }));
  }

  changeRoutes(changes: RouteChange[]): Promise<RouteChangeFailure[]> {
    const counts = Object.fromEntries((["add", "replace", "delete"] as const).map((action) => [`routes.${action}`, changes.filter((c) => c.action === action).length]));
    return this.span("route.change", counts, () => this.routeSocket.changeRoutes(changes));
  }

  private async changeOne(change: RouteChange): Promise<void> {
    const [failure] = await this.routeSocket.changeRoutes([change]);
    if (failure) throw failure.error;
  }

  close(): void {
    this.socket.socket.close();
    this.routeSocket.close();
  }
}

function routeAttributes(route: RouteSpec): Attributes {
  const attributes: Attributes = { "route.dst": route.dst };
  if (route.gateway !== undefined) attributes["route.gateway"] = route.gateway;
  if (route.linkIndex !== undefined) attributes["link.index"] = route.linkIndex;
  if (route.protocol !== undefined) attributes["route.protocol"] = route.protocol;
  return attributes;
}
