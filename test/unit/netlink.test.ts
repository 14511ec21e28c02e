import { AttrStream, putU32, rt } from "../../libs/netlink/package.js";
import { describe, expect, it } from "vitest";
import { decodeAddress } from "../../libs/netlink/addresses.js";
import { NetlinkError, errnoCodeOf, netlinkError } from "../../libs/netlink/errors.js";
import { formatIp, parseIp, parsePrefix } from "../../libs/netlink/ip.js";
import { decodeLink, encodeIpvlanInfo, encodeKindInfo, encodeVlanInfo, validateVlanId } from "../../libs/netlink/links.js";
import { decodeRoute, describeRoute, encodeRoute } from "../../libs/netlink/routes.js";
import { TRELLIS_ROUTE_PROTOCOL } from "../../libs/netlink/types.js";

/** Serialises a message as the kernel would send it and parses it back, as the socket does. */
function overTheWire(message: rt.LinkMessage): rt.LinkMessage {
  const stream = new AttrStream();
  rt.formatLinkMessage(message, stream);
  return rt.parseLinkMessage(Buffer.concat(stream.bufs));
}

describe("link info encoding", () => {
  it("encodes ipvlan l3 private as IFLA_INFO_KIND + nested IFLA_IPVLAN_MODE/FLAGS (u16)", () => {
    expect(encodeIpvlanInfo("l3", "private").toString("hex")).toBe(
      "0b000100" + "6970766c616e00" + "00" + // IFLA_INFO_KIND "ipvlan\0", padded
        "12000200" + // IFLA_INFO_DATA, 18 bytes: the last attribute's padding comes from the enclosing IFLA_LINKINFO
        "06000100" + "0100" + "0000" + // IFLA_IPVLAN_MODE = IPVLAN_MODE_L3
        "06000200" + "0100", // IFLA_IPVLAN_FLAGS = IPVLAN_F_PRIVATE
    );
  });

  it("encodes a vlan id as IFLA_VLAN_ID (u16) and a bare kind", () => {
    expect(encodeVlanInfo(10).toString("hex")).toBe("09000100" + "766c616e00" + "000000" + "0a000200" + "06000100" + "0a00");
    expect(encodeKindInfo("dummy").toString("hex")).toBe("0a000100" + "64756d6d7900");
  });

  it("round-trips every ipvlan mode and flag through a link message", () => {
    for (const mode of ["l2", "l3", "l3s"] as const) {
      for (const flag of ["bridge", "private", "vepa"] as const) {
        const link = decodeLink(
          overTheWire({ kind: "link", data: { index: 7, flags: { up: true } }, attrs: { ifname: "eth0", mtu: 1500, link: putU32(3), linkinfo: encodeIpvlanInfo(mode, flag) } }),
        );
        expect(link).toEqual({ index: 7, name: "eth0", up: true, mtu: 1500, parentIndex: 3, kind: "ipvlan", ipvlan: { mode, flag } });
      }
    }
  });

  it("decodes vlan id, alias, and no parent when IFLA_LINK is the link itself", () => {
    const vlan = decodeLink(overTheWire({ kind: "link", data: { index: 4 }, attrs: { ifname: "d0.10", mtu: 1500, link: putU32(2), linkinfo: encodeVlanInfo(10), ifalias: "trellis" } }));
    expect(vlan).toEqual({ index: 4, name: "d0.10", up: false, mtu: 1500, parentIndex: 2, alias: "trellis", kind: "vlan", vlan: { id: 10 } });
    const nic = decodeLink(overTheWire({ kind: "link", data: { index: 2, flags: { up: true } }, attrs: { ifname: "eth0", mtu: 9000, link: putU32(2) } }));
    expect(nic).toEqual({ index: 2, name: "eth0", up: true, mtu: 9000 });
  });

  it("validates vlan ids in the reference's words", () => {
    expect(() => validateVlanId("create vlan link x", 5000)).toThrow("failed to create vlan link x: vlan id must be between 1-4094, received: 5000 (EINVAL)");
    expect(() => validateVlanId("create vlan link x", 0)).toThrow(NetlinkError);
    expect(() => validateVlanId("create vlan link x", 4094)).not.toThrow();
  });
});

describe("errors", () => {
  it("reads the errno from the netlink package's rejection and says what failed", () => {
    const error = netlinkError("add route 10.0.0.0/8 dev 3", new Error("Request rejected: EEXIST"));
    expect(error).toBeInstanceOf(NetlinkError);
    expect(error.code).toBe("EEXIST");
    expect(error.errno).toBe(17);
    expect(error.message).toBe("failed to add route 10.0.0.0/8 dev 3: file already exists (EEXIST)");
  });

  it("uses the kernel's name EOPNOTSUPP for errno 95 and keeps hints", () => {
    expect(errnoCodeOf(new Error("Request rejected: ENOTSUP"))).toBe("EOPNOTSUPP");
    const error = netlinkError("create dummy link d0", new Error("Request rejected: ENOTSUP"), 'link kind "dummy" is not supported by this kernel');
    expect(error.message).toBe('failed to create dummy link d0: link kind "dummy" is not supported by this kernel (EOPNOTSUPP)');
    expect(error.errno).toBe(95);
  });

  it("keeps an unexplained failure's message and does not wrap twice", () => {
    const error = netlinkError("list links", new Error("Timeout has been reached"));
    expect(error.message).toBe("failed to list links: Timeout has been reached");
    expect(error.code).toBe("EUNKNOWN");
    expect(netlinkError("other", error)).toBe(error);
  });
});

describe("ip helpers", () => {
  it("parses prefixes and prints canonical addresses", () => {
    expect(parsePrefix("10.0.0.2/24")).toEqual({ family: 4, bytes: Buffer.from([10, 0, 0, 2]), prefixLength: 24 });
    expect(parsePrefix("2001:DB8:0:0::1/64")?.family).toBe(6);
    expect(parsePrefix("10.0.0.2")).toBeUndefined();
    expect(parsePrefix("10.0.0.2/33")).toBeUndefined();
    expect(parseIp("fe80::1")?.bytes.length).toBe(16);
    expect(formatIp(parsePrefix("2001:db8:0:0::1/64")!.bytes)).toBe("2001:db8::1");
  });
});

describe("address decoding", () => {
  it("prefers IFA_LOCAL (own address) over IFA_ADDRESS (peer)", () => {
    const local = Buffer.from([10, 0, 0, 2]);
    const peer = Buffer.from([10, 0, 0, 1]);
    expect(decodeAddress({ kind: "address", data: { family: 2, prefixlen: 32, index: 3 }, attrs: { local, address: peer } })).toEqual({ linkIndex: 3, cidr: "10.0.0.2/32", family: 4 });
    expect(decodeAddress({ kind: "address", data: { family: 10, prefixlen: 64, index: 3 }, attrs: { address: parseIp("2001:db8::2")!.bytes } })?.cidr).toBe("2001:db8::2/64");
  });
});

describe("route encoding", () => {
  it("defaults to the Trellis protocol, the main table and scope link for device routes", () => {
    const { data, attrs } = encodeRoute("add", { dst: "default", linkIndex: 5 });
    expect(data).toEqual({ family: 2, dstLen: 0, table: 254, protocol: TRELLIS_ROUTE_PROTOCOL, scope: rt.RouteScope.LINK, type: rt.RouteType.UNICAST });
    expect(attrs).toEqual({ oif: 5 });
  });

  it("takes the family from the gateway or the prefix, and scope universe with a gateway", () => {
    const v6 = encodeRoute("add", { dst: "default", gateway: "2001:db8::1" });
    expect(v6.data).toMatchObject({ family: 10, scope: rt.RouteScope.UNIVERSE });
    expect(encodeRoute("add", { dst: "default", family: 6, linkIndex: 2 }).data.family).toBe(10);
    const v4 = encodeRoute("add", { dst: "10.1.0.0/16", gateway: "10.0.0.1", protocol: 4, scope: "link" });
    expect(v4.data).toMatchObject({ family: 2, dstLen: 16, protocol: 4, scope: rt.RouteScope.LINK });
    expect(v4.attrs).toEqual({ dst: Buffer.from([10, 1, 0, 0]), gateway: Buffer.from([10, 0, 0, 1]) });
  });

  it("matches any scope but only its protocol when deleting", () => {
    expect(encodeRoute("delete", { dst: "10.1.0.0/16" }, true).data).toMatchObject({ scope: rt.RouteScope.NOWHERE, protocol: TRELLIS_ROUTE_PROTOCOL });
  });

  it("rejects bad routes before the kernel sees them", () => {
    expect(() => encodeRoute("add route x", { dst: "10.1.0.0/16" })).toThrow("failed to add route x: a route needs a gateway, a link, or both (EINVAL)");
    expect(() => encodeRoute("add route x", { dst: "10.1.0.0", linkIndex: 1 })).toThrow(/invalid destination "10.1.0.0"/);
    expect(() => encodeRoute("add route x", { dst: "10.1.0.0/16", gateway: "fe80::1" })).toThrow(/not in the address family/);
    expect(() => encodeRoute("add route x", { dst: "10.1.0.0/16", gateway: "nope" })).toThrow(/invalid gateway "nope"/);
    expect(() => encodeRoute("add route x", { dst: "10.1.0.0/16", family: 6, linkIndex: 1 })).toThrow(/is not an IPv6 prefix/);
    expect(describeRoute({ dst: "default", gateway: "10.0.0.1", linkIndex: 3 })).toBe("default via 10.0.0.1 dev 3");
  });
});

describe("route decoding", () => {
  const wire = (data: rt.Route, attrs: rt.RouteAttrs): rt.RouteMessage => {
    const stream = new AttrStream();
    rt.formatRouteMessage({ kind: "route", data, attrs }, stream);
    return rt.parseRouteMessage(Buffer.concat(stream.bufs));
  };

  it("turns enum names back into numbers and keeps private protocols", () => {
    const kernel = decodeRoute(wire({ family: 2, dstLen: 24, table: 254, protocol: 2, scope: 253, type: 1 }, { dst: Buffer.from([10, 0, 0, 0]), oif: 3, table: 254 }));
    expect(kernel).toEqual({ family: 4, dst: "10.0.0.0/24", protocol: 2, scope: 253, table: 254, linkIndex: 3 });
    // The package's types name only the well-known protocols; on the wire any number goes.
    const privateProtocol = TRELLIS_ROUTE_PROTOCOL as unknown as rt.Route["protocol"];
    const ours = decodeRoute(wire({ family: 10, dstLen: 0, table: 254, protocol: privateProtocol, scope: 0, type: 1 }, { gateway: parseIp("fe80::1")!.bytes }));
    expect(ours).toEqual({ family: 6, dst: "default", gateway: "fe80::1", protocol: 210, scope: 0, table: 254 });
  });

  it("leaves out other tables and non-unicast routes", () => {
    expect(decodeRoute(wire({ family: 2, dstLen: 32, table: 255, protocol: 2, scope: 254, type: 2 }, { dst: Buffer.from([127, 0, 0, 1]), table: 255 }))).toBeUndefined();
    expect(decodeRoute(wire({ family: 2, dstLen: 8, table: 254, protocol: 4, scope: 0, type: 6 }, { dst: Buffer.from([10, 0, 0, 0]) }))).toBeUndefined();
  });
});
