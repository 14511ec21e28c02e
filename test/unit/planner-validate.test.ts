import { describe, expect, it } from "vitest";
import { ParentKind, type NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { validateNetworkSpec } from "../../services/planner/validate.js";

function spec(overrides: Partial<NetworkSpec>): NetworkSpec {
  return { name: "n1", driver: "ipvlan", subnets: [], gateways: [], internal: false, ipv6: false, options: {}, ...overrides };
}

describe("network create validation", () => {
  it("defaults to l2 bridge", () => {
    const network = validateNetworkSpec(spec({ options: { parent: "eth0" } }));
    expect([network.mode, network.flag]).toEqual(["l2", "bridge"]);
    expect(network.parent).toEqual({ name: "eth0", kind: ParentKind.PARENT_KIND_EXISTING, base: "", vlanId: 0 });
  });

  it("reads name.vlan as an 802.1Q sub-interface to create", () => {
    expect(validateNetworkSpec(spec({ options: { parent: "eth0.20" } })).parent).toEqual({
      name: "eth0.20",
      kind: ParentKind.PARENT_KIND_VLAN,
      base: "eth0",
      vlanId: 20,
    });
  });

  it.each(["0", "4095", "5000", "abc"])("refuses VLAN id %s with the reference's message", (id) => {
    expect(() => validateNetworkSpec(spec({ options: { parent: `eth0.${id}` } }))).toThrow(
      `vlan id must be between 1-4094, received: ${id}`,
    );
  });

  it("puts a network without parent, or --internal, on a dummy; only --internal drops default routes", () => {
    expect(validateNetworkSpec(spec({})).parent.kind).toBe(ParentKind.PARENT_KIND_DUMMY);
    expect(validateNetworkSpec(spec({})).internal).toBe(false);
    const internal = validateNetworkSpec(spec({ internal: true, options: { parent: "eth0" } }));
    expect([internal.parent.kind, internal.internal]).toEqual([ParentKind.PARENT_KIND_DUMMY, true]);
  });

  it("refuses the loopback parent, over-long names and unknown options, naming what is valid", () => {
    expect(() => validateNetworkSpec(spec({ options: { parent: "lo" } }))).toThrow(/loopback interface cannot be an ipvlan parent/);
    expect(() => validateNetworkSpec(spec({ options: { parent: "averyveryverylongname0" } }))).toThrow(
      /at most 15 characters, this one has 22/,
    );
    expect(() => validateNetworkSpec(spec({ options: { foo: "bar" } }))).toThrow(
      'unknown option "foo": valid options are parent, ipvlan_mode, ipvlan_flag',
    );
    expect(() => validateNetworkSpec(spec({ options: { ipvlan_mode: "l4" } }))).toThrow('invalid ipvlan_mode "l4": must be one of l2, l3, l3s');
    expect(() => validateNetworkSpec(spec({ options: { ipvlan_flag: "open" } }))).toThrow(
      'invalid ipvlan_flag "open": must be one of bridge, private, vepa',
    );
  });

  it("pairs each gateway with the subnet that contains it", () => {
    const network = validateNetworkSpec(
      spec({ subnets: ["192.168.114.0/24", "192.168.116.0/24"], gateways: ["192.168.116.254", "192.168.114.254"] }),
    );
    expect(network.subnets).toEqual([
      { cidr: "192.168.114.0/24", gateway: "192.168.114.254", ipv6: false },
      { cidr: "192.168.116.0/24", gateway: "192.168.116.254", ipv6: false },
    ]);
  });

  it("refuses bad subnets and gateways with what would be right", () => {
    expect(() => validateNetworkSpec(spec({ subnets: ["10.1.1.0/33"] }))).toThrow(/invalid subnet "10.1.1.0\/33": expected a CIDR/);
    expect(() => validateNetworkSpec(spec({ subnets: ["10.1.1.5/24"] }))).toThrow(/host bits are set; did you mean 10.1.1.0\/24\?/);
    expect(() => validateNetworkSpec(spec({ subnets: ["10.1.0.0/24"], gateways: ["10.2.0.1"] }))).toThrow(
      "gateway 10.2.0.1 is not in any subnet of the network (subnets: 10.1.0.0/24)",
    );
    expect(() => validateNetworkSpec(spec({ subnets: ["10.1.0.0/24"], gateways: ["10.1.0.1", "10.1.0.2"] }))).toThrow(
      /subnet 10.1.0.0\/24 has two gateways/,
    );
  });

  it("ignores gateways in l3 mode and says so", () => {
    const network = validateNetworkSpec(spec({ subnets: ["10.1.214.0/24"], gateways: ["10.1.214.1"], options: { ipvlan_mode: "l3" } }));
    expect(network.subnets[0]!.gateway).toBe("");
    expect(network.notes).toEqual(["gateway 10.1.214.1 ignored: l3 mode routes by device (default dev eth0)"]);
  });

  it("adds a default IPv4 subnet to an IPv6-only network, and a default IPv6 one to --ipv6 without a v6 subnet", () => {
    const v6only = validateNetworkSpec(spec({ ipv6: true, subnets: ["2001:db8:abc2::/64"] }));
    expect(v6only.subnets.map((s) => [s.cidr, s.ipv6])).toEqual([["", false], ["2001:db8:abc2::/64", true]]);
    expect(validateNetworkSpec(spec({ ipv6: true })).subnets.map((s) => s.ipv6)).toEqual([false, true]);
  });
});
