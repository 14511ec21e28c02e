/** The private rtnetlink protocol number that marks routes Trellis installs (principle 2: own what you make). */
export const TRELLIS_ROUTE_PROTOCOL = 210;

export type IpvlanMode = "l2" | "l3" | "l3s";
export type IpvlanFlag = "bridge" | "private" | "vepa";
export type IpFamily = 4 | 6;

export interface Link {
  index: number;
  name: string;
  /** IFLA_INFO_KIND: "ipvlan", "vlan", "dummy", "veth", "bridge"…; absent for physical devices and loopback. */
  kind?: string;
  up: boolean;
  mtu: number;
  /**
   * IFLA_LINK: the lower device (parent of an ipvlan/vlan, peer of a veth). For a link whose parent lives in
   * another namespace (an ipvlan inside a container) this index is the parent's in *that* namespace.
   */
  parentIndex?: number;
  alias?: string;
  /** IFLA_ADDRESS of an Ethernet-like link, "aa:bb:cc:dd:ee:ff". */
  mac?: string;
  ipvlan?: { mode: IpvlanMode; flag: IpvlanFlag };
  vlan?: { id: number };
}

export interface Address {
  linkIndex: number;
  /** "10.0.0.2/24", "2001:db8::1/64" */
  cidr: string;
  family: IpFamily;
}

export interface Route {
  family: IpFamily;
  /** "default" or a CIDR such as "10.1.0.0/16" */
  dst: string;
  gateway?: string;
  linkIndex?: number;
  protocol: number;
  scope: number;
  table: number;
}

export interface RouteSpec {
  /** "default" (family taken from the gateway, else IPv4) or a CIDR */
  dst: string;
  gateway?: string;
  linkIndex?: number;
  /** Defaults to TRELLIS_ROUTE_PROTOCOL. */
  protocol?: number;
  /** Defaults to "link" for a route without gateway, "universe" otherwise (as `ip route` does). */
  scope?: "link" | "universe";
  /** Needed only for `dst: "default"` without a gateway, to tell IPv4 from IPv6. */
  family?: IpFamily;
}

export interface AddAddressOptions {
  /** IPv6 only: skip duplicate address detection so the address is usable at once. */
  nodad?: boolean;
}
