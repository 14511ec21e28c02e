import { describe, expect, it } from "vitest";
import { NetworkSpec, ParentKind } from "../../libs/proto/gen/trellis/v1/network.js";
import { validateNetworkSpec } from "../../services/planner/validate.js";

function spec(overrides: Partial<NetworkSpec>): NetworkSpec {
  return NetworkSpec.fromPartial({ name: "n1", driver: "ipvlan", ...overrides });
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
      'unknown option "foo": valid options are parent, ipvlan_mode, ipvlan_flag, ipv4_block_prefix, ipv6_block_prefix',
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

  it("pairs each ip range and aux address with the subnet that contains it, as docker does", () => {
    const network = validateNetworkSpec(
      spec({
        subnets: ["10.1.0.0/16", "10.2.0.0/16", "2001:db8:1::/64"],
        ipRanges: ["10.2.5.0/24", "2001:db8:1::100/120"],
        auxAddresses: { router: "10.1.0.5", nas: "10.2.5.6", six: "2001:db8:1:0::6" },
        ipv6: true,
      }),
    );
    expect(network.subnets).toEqual([
      { cidr: "10.1.0.0/16", gateway: "", ipv6: false, pool: { ipRange: "", auxAddresses: { router: "10.1.0.5" } } },
      { cidr: "10.2.0.0/16", gateway: "", ipv6: false, pool: { ipRange: "10.2.5.0/24", auxAddresses: { nas: "10.2.5.6" } } },
      { cidr: "2001:db8:1::/64", gateway: "", ipv6: true, pool: { ipRange: "2001:db8:1::100/120", auxAddresses: { six: "2001:db8:1::6" } } },
    ]);
  });

  it("takes an ip range as large as its subnet, and leaves subnets without range or aux address as they were", () => {
    const network = validateNetworkSpec(spec({ subnets: ["10.1.0.0/24", "10.3.0.0/24"], ipRanges: ["10.1.0.0/24"] }));
    expect(network.subnets).toEqual([
      { cidr: "10.1.0.0/24", gateway: "", ipv6: false, pool: { ipRange: "10.1.0.0/24", auxAddresses: {} } },
      { cidr: "10.3.0.0/24", gateway: "", ipv6: false },
    ]);
  });

  it.each([
    [{ ipRanges: ["10.2.0.0/24"] }, "ip range 10.2.0.0/24 is not in any subnet of the network (subnets: 10.1.0.0/16)"],
    [{ ipRanges: ["10.0.0.0/8"] }, "ip range 10.0.0.0/8 is not in any subnet of the network (subnets: 10.1.0.0/16)"],
    [{ ipRanges: ["2001:db8::/120"] }, "ip range 2001:db8::/120 is not in any subnet of the network (subnets: 10.1.0.0/16)"],
    [{ ipRanges: ["10.1.5.7/24"] }, 'invalid ip range "10.1.5.7/24": host bits are set; did you mean 10.1.5.0/24?'],
    [{ ipRanges: ["10.1.5.0"] }, 'invalid ip range "10.1.5.0": expected a CIDR such as 192.168.1.0/24 or 2001:db8::/64'],
    [{ ipRanges: ["10.1.5.0/24", "10.1.6.0/24"] }, "subnet 10.1.0.0/16 has two ip ranges, 10.1.5.0/24 and 10.1.6.0/24: give at most one per subnet"],
    [{ ipRanges: ["10.1.255.255/32"] }, "ip range 10.1.255.255/32 holds no usable address of subnet 10.1.0.0/16: choose a range with addresses from 10.1.0.1 to 10.1.255.254"],
    [{ auxAddresses: { router: "10.9.0.1" } }, "aux address router=10.9.0.1 is not in any subnet of the network (subnets: 10.1.0.0/16)"],
    [{ auxAddresses: { router: "10.1.0.300" } }, 'invalid aux address router "10.1.0.300": expected an IP address such as 192.168.1.1'],
    [{ auxAddresses: { "": "10.1.0.9" } }, 'invalid aux address "=10.1.0.9": it needs a name, such as router=10.1.0.9'],
    [{ auxAddresses: { router: "10.1.0.0" } }, "aux address router=10.1.0.0 is not a usable address of subnet 10.1.0.0/16: choose one from 10.1.0.1 to 10.1.255.254"],
    [{ auxAddresses: { a: "10.1.0.9", b: "10.1.0.9" } }, "aux addresses a and b are both 10.1.0.9: give each its own address"],
    [{ gateways: ["10.1.0.254"], auxAddresses: { router: "10.1.0.254" } }, "aux address router=10.1.0.254 is the gateway of subnet 10.1.0.0/16: give one of them another address"],
    [
      { auxAddresses: { router: "10.1.0.1" } },
      "aux address router=10.1.0.1 is the default gateway of subnet 10.1.0.0/16 (its first usable address): choose another address, or set --gateway",
    ],
  ] as [Partial<NetworkSpec>, string][])("refuses a bad ip range or aux address (%o) with what would be right", (overrides, message) => {
    expect(() => validateNetworkSpec(spec({ subnets: ["10.1.0.0/16"], ...overrides }))).toThrow(message);
  });

  it("lets an aux address take the first usable address once --gateway is elsewhere, or in l3 where there is no gateway", () => {
    expect(validateNetworkSpec(spec({ subnets: ["10.1.0.0/16"], gateways: ["10.1.0.254"], auxAddresses: { r: "10.1.0.1" } })).subnets[0]!.pool).toEqual({
      ipRange: "",
      auxAddresses: { r: "10.1.0.1" },
    });
    const l3 = validateNetworkSpec(spec({ subnets: ["10.1.0.0/16"], gateways: ["10.1.0.1"], auxAddresses: { r: "10.1.0.1" }, options: { ipvlan_mode: "l3" } }));
    expect([l3.subnets[0]!.gateway, l3.subnets[0]!.pool?.auxAddresses]).toEqual(["", { r: "10.1.0.1" }]);
  });

  it("gives l3 and l3s networks per-host block sizes, the asked ones or 26 and 122, and l2 networks none", () => {
    expect(validateNetworkSpec(spec({ options: { ipvlan_mode: "l3" } })).hostBlocks).toEqual({ ipv4PrefixLength: 26, ipv6PrefixLength: undefined });
    expect(validateNetworkSpec(spec({ ipv6: true, options: { ipvlan_mode: "l3s" } })).hostBlocks).toEqual({ ipv4PrefixLength: 26, ipv6PrefixLength: 122 });
    const asked = validateNetworkSpec(spec({ ipv6: true, options: { ipvlan_mode: "l3", ipv4_block_prefix: "28", ipv6_block_prefix: "120" } }));
    expect(asked.hostBlocks).toEqual({ ipv4PrefixLength: 28, ipv6PrefixLength: 120 });
    expect(validateNetworkSpec(spec({})).hostBlocks).toBeUndefined();
  });

  it.each([
    [{ ipv4_block_prefix: "28" }, "option ipv4_block_prefix is for l3 and l3s networks, whose hosts take blocks of the subnet; an l2 network has none: remove it, or add -o ipvlan_mode=l3"],
    [{ ipvlan_mode: "l2", ipv6_block_prefix: "120" }, /^option ipv6_block_prefix is for l3 and l3s networks/],
    [{ ipvlan_mode: "l3", ipv4_block_prefix: "19" }, "ipv4_block_prefix must be between 20-32, received: 19"],
    [{ ipvlan_mode: "l3", ipv4_block_prefix: "33" }, "ipv4_block_prefix must be between 20-32, received: 33"],
    [{ ipvlan_mode: "l3", ipv4_block_prefix: "/28" }, "ipv4_block_prefix must be between 20-32, received: /28"],
    [{ ipvlan_mode: "l3s", ipv6_block_prefix: "64" }, "ipv6_block_prefix must be between 116-128, received: 64"],
  ] as [Record<string, string>, string | RegExp][])("refuses block sizes %o with what would be right", (options, message) => {
    expect(() => validateNetworkSpec(spec({ ipv6: true, options }))).toThrow(message);
  });

  it("refuses an IPv6 block size on a network without IPv6", () => {
    expect(() => validateNetworkSpec(spec({ options: { ipvlan_mode: "l3", ipv6_block_prefix: "120" } }))).toThrow(
      "option ipv6_block_prefix needs IPv6 on the network: add --ipv6 or an IPv6 --subnet, or remove it",
    );
  });
});
