import { describe, expect, it } from "vitest";
import { describeNetwork, differences, nameFromSubnet, networkSpecOf } from "../../services/docker-plugin/network-options.js";
import { Network, ParentKind } from "../../libs/proto/gen/trellis/v1/network.js";

const data = (pool: string, gateway: string) => ({ AddressSpace: "trellis-local", Pool: pool, Gateway: gateway, AuxAddresses: {} });

describe("Docker's CreateNetwork as trellis network create's options", () => {
  it("names the network by -o trellis.network, else by its first subnet, and passes the other options on", () => {
    const spec = networkSpecOf({ Options: { "com.docker.network.generic": { parent: "eth0.20", "trellis.network": "ipvlan20" } }, IPv4Data: [data("192.168.20.0/24", "192.168.20.1/24")] }, new Map());
    expect(spec).toMatchObject({ name: "ipvlan20", driver: "ipvlan", subnets: ["192.168.20.0/24"], gateways: ["192.168.20.1"], options: { parent: "eth0.20" } });
    expect(networkSpecOf({ IPv4Data: [data("192.168.20.0/24", "192.168.20.1/24")] }, new Map()).name).toBe("docker-192.168.20.0-24");
    expect(nameFromSubnet("fd00:114::/64")).toBe("docker-fd00-114---64");
  });

  it("drops the gateway Docker always asks for where Trellis has none (l3, l3s, --internal)", () => {
    const l3 = networkSpecOf({ Options: { "com.docker.network.generic": { ipvlan_mode: "l3" } }, IPv4Data: [data("10.21.0.0/16", "10.21.0.1/16")] }, new Map());
    expect(l3.gateways).toEqual([]);
    const internal = networkSpecOf({ Options: { "com.docker.network.internal": true }, IPv4Data: [data("10.22.0.0/16", "10.22.0.1/16")] }, new Map());
    expect(internal).toMatchObject({ internal: true, gateways: [] });
  });

  it("takes --ip-range from the pool's record, and IPv6 from the IPv6 pools", () => {
    const pools = new Map([["10.23.0.0/24", { cidr: "10.23.0.0/24", v6: false, ipRange: "10.23.0.128/25" }]]);
    const spec = networkSpecOf({ IPv4Data: [data("10.23.0.0/24", "10.23.0.1/24")], IPv6Data: [data("fd00:23::/64", "fd00:23::1/64")] }, pools);
    expect(spec).toMatchObject({ ipRanges: ["10.23.0.128/25"], ipv6: true, subnets: ["10.23.0.0/24", "fd00:23::/64"] });
  });

  it("takes --aux-address without the prefix length Docker sends it with", () => {
    const spec = networkSpecOf({ IPv4Data: [{ ...data("10.24.0.0/24", "10.24.0.1/24"), AuxAddresses: { router: "10.24.0.5/24" } }] }, new Map());
    expect(spec.auxAddresses).toEqual({ router: "10.24.0.5" });
  });

  it("refuses pools of another IPAM", () => {
    expect(() => networkSpecOf({ IPv4Data: [{ ...data("172.18.0.0/16", "172.18.0.1/16"), AddressSpace: "LocalDefault" }] }, new Map())).toThrow(/add --ipam-driver=trellis/);
  });
});

describe("joining an existing network", () => {
  const existing = Network.fromPartial({
    name: "ipvlan20",
    mode: "l2",
    flag: "bridge",
    parent: { name: "eth0.20", kind: ParentKind.PARENT_KIND_VLAN, base: "eth0", vlanId: 20 },
    subnets: [{ cidr: "192.168.20.0/24", gateway: "192.168.20.1", ipv6: false }],
  });
  const spec = (generic: Record<string, string>, pool = "192.168.20.0/24", gateway = "192.168.20.1/24") =>
    networkSpecOf({ Options: { "com.docker.network.generic": { "trellis.network": "ipvlan20", ...generic } }, IPv4Data: [data(pool, gateway)] }, new Map());

  it("finds no difference for the same options, given or left to their defaults", () => {
    expect(differences(existing, spec({ parent: "eth0.20" }))).toEqual([]);
    expect(differences(existing, spec({ parent: "eth0.20", ipvlan_mode: "l2", ipvlan_flag: "bridge" }))).toEqual([]);
  });

  it("names each difference, and the options that would join", () => {
    expect(differences(existing, spec({ parent: "eth0.30", ipvlan_mode: "l3" }))).toEqual(["ipvlan_mode=l2, not l3", "parent=eth0.20, not eth0.30"]);
    expect(differences(existing, spec({}, "192.168.21.0/24", "192.168.21.1/24"))).toEqual(["subnets 192.168.20.0/24, not 192.168.21.0/24", "gateway 192.168.20.1, not 192.168.21.1"]);
    expect(describeNetwork(existing)).toBe("--subnet=192.168.20.0/24 --gateway=192.168.20.1 -o parent=eth0.20 -o ipvlan_mode=l2 -o ipvlan_flag=bridge");
  });
});
