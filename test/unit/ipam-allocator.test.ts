import { describe, expect, it } from "vitest";
import { status } from "@grpc/grpc-js";
import {
  assignSubnets,
  defaultIpv4Subnets,
  lowestFree,
  planSubnets,
  poolBounds,
  resolveStaticAddress,
  ulaPrefixFromRandom,
} from "../../services/ipam/allocator.js";
import { StatusError } from "../../libs/grpc/status-error.js";
import { addressKey, allocationMessageId } from "../../services/ipam/keys.js";
import { keyToken } from "../../libs/bus/subjects.js";
import { formatPrefix, parseAddress, parsePrefix } from "../../libs/ipmath/index.js";
import type { IpamNetwork, IpamRegistry, SubnetRequest } from "../../libs/proto/gen/trellis/v1/ipam.js";

const subnet = (cidr: string, gateway = "", ipv6 = false): SubnetRequest => ({ cidr, gateway, ipv6 });
const emptyRegistry: IpamRegistry = { networks: [], ipv6UlaPrefix: "" };
const ula = parsePrefix("fd12:3456:789a::/48");

function refusal(fn: () => unknown): StatusError {
  try {
    fn();
  } catch (error) {
    if (error instanceof StatusError) return error;
    throw error;
  }
  throw new Error("expected a refusal");
}

function assign(subnets: SubnetRequest[], registry = emptyRegistry, withGateway = true, networkId = "n1") {
  const plans = planSubnets({ networkId, subnets, withGateway });
  return assignSubnets(networkId, plans, withGateway, registry, ula);
}

const registryWith = (networkId: string, ...cidrs: string[]): IpamRegistry => ({
  networks: [{ networkId, incarnation: "i", subnets: cidrs.map((cidr) => ({ cidr, gateway: "", ipv6: cidr.includes(":") })) }],
  ipv6UlaPrefix: "",
});

describe("subnet validation", () => {
  it("refuses host bits and says which network address was meant", () => {
    const error = refusal(() => planSubnets({ networkId: "n1", subnets: [subnet("10.1.1.5/24")], withGateway: true }));
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.message).toBe("invalid subnet 10.1.1.5/24: host bits set, did you mean 10.1.1.0/24?");
  });

  it("refuses garbage, missing prefix lengths and oversized ones", () => {
    expect(refusal(() => planSubnets({ networkId: "n", subnets: [subnet("10.1/16")], withGateway: true })).message).toBe(
      "invalid subnet 10.1/16: not an IP address",
    );
    expect(refusal(() => planSubnets({ networkId: "n", subnets: [subnet("10.1.0.0")], withGateway: true })).message).toContain(
      "no prefix length",
    );
    expect(refusal(() => planSubnets({ networkId: "n", subnets: [subnet("10.1.0.0/33")], withGateway: true })).message).toBe(
      "invalid subnet 10.1.0.0/33: prefix length must be between 0 and 32, received: 33",
    );
  });

  it("refuses a gateway outside its subnet, naming the subnet and its usable range", () => {
    const error = refusal(() => planSubnets({ networkId: "n", subnets: [subnet("10.1.0.0/24", "10.2.0.1")], withGateway: true }));
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.message).toBe("invalid gateway 10.2.0.1: it must be a usable address of subnet 10.1.0.0/24 (10.1.0.1 to 10.1.0.254)");
  });

  it("refuses the network and broadcast addresses as gateways", () => {
    for (const gateway of ["10.1.0.0", "10.1.0.255"]) {
      expect(refusal(() => planSubnets({ networkId: "n", subnets: [subnet("10.1.0.0/24", gateway)], withGateway: true })).code).toBe(
        status.INVALID_ARGUMENT,
      );
    }
  });

  it("refuses overlapping subnets within one request and an empty network id", () => {
    expect(refusal(() => planSubnets({ networkId: "n", subnets: [subnet("10.1.0.0/16"), subnet("10.1.2.0/24")], withGateway: true })).message).toBe(
      "subnet 10.1.0.0/16 overlaps subnet 10.1.2.0/24 of the same request",
    );
    expect(refusal(() => planSubnets({ networkId: " ", subnets: [], withGateway: true })).message).toBe("network_id must not be empty");
  });
});

describe("subnet assignment", () => {
  it("gives the first usable address as gateway, or the given one, or none without gateway", () => {
    expect(assign([subnet("192.168.1.0/24")])).toEqual([{ cidr: "192.168.1.0/24", gateway: "192.168.1.1", ipv6: false }]);
    expect(assign([subnet("192.168.114.0/24", "192.168.114.254")])[0]!.gateway).toBe("192.168.114.254");
    expect(assign([subnet("192.168.1.0/24", "192.168.1.9")], emptyRegistry, false)[0]!.gateway).toBe("");
    expect(assign([subnet("2001:db8:abc2::/64")])[0]).toEqual({ cidr: "2001:db8:abc2::/64", gateway: "2001:db8:abc2::1", ipv6: true });
  });

  it("refuses overlap with another network's subnet, naming that network", () => {
    const error = refusal(() => assign([subnet("10.1.0.0/24")], registryWith("blue", "10.1.0.0/16")));
    expect(error.code).toBe(status.ALREADY_EXISTS);
    expect(error.message).toBe("subnet 10.1.0.0/24 overlaps subnet 10.1.0.0/16 of network blue");
  });

  it("takes the next free default IPv4 subnet, skipping any that overlap", () => {
    expect(assign([subnet("")])[0]!.cidr).toBe("172.18.0.0/16");
    expect(assign([subnet("")], registryWith("a", "172.18.5.0/24"))[0]!.cidr).toBe("172.19.0.0/16");
    expect(assign([subnet(""), subnet("172.19.0.0/16"), subnet("")]).map((s) => s.cidr)).toEqual([
      "172.18.0.0/16",
      "172.19.0.0/16",
      "172.20.0.0/16",
    ]);
  });

  it("goes on to 192.168.0.0/16 in /20s after 172.31.0.0/16, then says the pools are exhausted", () => {
    const all = [...defaultIpv4Subnets()].map(formatPrefix);
    expect(all.slice(12, 16)).toEqual(["172.30.0.0/16", "172.31.0.0/16", "192.168.0.0/20", "192.168.16.0/20"]);
    expect(all).toHaveLength(30);
    expect(assign([subnet("")], registryWith("a", "172.16.0.0/12", "192.168.0.0/20"))[0]!.cidr).toBe("192.168.16.0/20");
    const error = refusal(() => assign([subnet("")], registryWith("a", "172.16.0.0/12", "192.168.0.0/16")));
    expect(error.code).toBe(status.RESOURCE_EXHAUSTED);
  });

  it("cuts default IPv6 subnets as /64s of the cluster's ULA /48", () => {
    expect(assign([subnet("", "", true)])[0]!.cidr).toBe("fd12:3456:789a::/64");
    expect(assign([subnet("", "", true)], registryWith("a", "fd12:3456:789a::/64"))[0]!.cidr).toBe("fd12:3456:789a:1::/64");
    expect(formatPrefix(ulaPrefixFromRandom(new Uint8Array([0x12, 0x34, 0x56, 0x78, 0x9a])))).toBe("fd12:3456:789a::/48");
  });

  it("refuses a gateway for a default subnet", () => {
    expect(refusal(() => assign([subnet("", "172.18.0.1")])).message).toBe("invalid gateway 172.18.0.1: a gateway needs an explicit subnet");
  });
});

describe("ip range and aux addresses", () => {
  const withPool = (ipRange: string, auxAddresses: Record<string, string>, cidr = "192.168.1.0/24") =>
    planSubnets({ networkId: "n", withGateway: true, subnets: [{ cidr, gateway: "", ipv6: false, pool: { ipRange, auxAddresses } }] });

  it("keeps them in the allocated subnet", () => {
    const plans = withPool("192.168.1.128/25", { router: "192.168.1.5" });
    expect(assignSubnets("n", plans, true, emptyRegistry, ula)[0]!.pool).toEqual({ ipRange: "192.168.1.128/25", auxAddresses: { router: "192.168.1.5" } });
  });

  it("refuses a range outside the subnet, aux addresses outside it or on the gateway, and both without a subnet", () => {
    expect(refusal(() => withPool("192.168.2.0/25", {})).message).toBe("invalid ip range 192.168.2.0/25: it must be inside subnet 192.168.1.0/24");
    expect(refusal(() => withPool("192.168.1.130/25", {})).message).toContain("host bits set, did you mean 192.168.1.128/25?");
    expect(refusal(() => withPool("", { router: "10.0.0.1" })).message).toContain("invalid aux address router=10.0.0.1: it must be a usable address of subnet 192.168.1.0/24");
    expect(refusal(() => assignSubnets("n", withPool("", { router: "192.168.1.1" }), true, emptyRegistry, ula)).message).toBe(
      "invalid aux address router=192.168.1.1: it is the gateway of subnet 192.168.1.0/24",
    );
    expect(refusal(() => withPool("", { a: "192.168.1.9", b: "192.168.1.9" })).message).toBe("aux addresses a and b are both 192.168.1.9");
    const noSubnet = refusal(() => planSubnets({ networkId: "n", withGateway: true, subnets: [{ cidr: "", gateway: "", ipv6: false, pool: { ipRange: "10.0.0.0/8", auxAddresses: {} } }] }));
    expect(noSubnet.message).toBe("an ip range or aux address needs an explicit subnet");
  });

  it("refuses an aux address as a static endpoint address, naming it", () => {
    const network: IpamNetwork = {
      networkId: "n",
      incarnation: "i",
      subnets: [{ cidr: "192.168.1.0/24", gateway: "", ipv6: false, pool: { ipRange: "", auxAddresses: { router: "192.168.1.5" } } }],
    };
    expect(refusal(() => resolveStaticAddress(network, 4, "192.168.1.5")).message).toBe("address 192.168.1.5 is aux address router of subnet 192.168.1.0/24");
  });
});

describe("addresses", () => {
  const network: IpamNetwork = {
    networkId: "n1",
    incarnation: "i",
    subnets: [
      { cidr: "10.1.0.0/24", gateway: "10.1.0.1", ipv6: false },
      { cidr: "10.1.1.0/24", gateway: "", ipv6: false },
      { cidr: "2001:db8::/64", gateway: "", ipv6: true },
    ],
  };

  it("resolves a static address to its subnet", () => {
    expect(resolveStaticAddress(network, 4, "10.1.1.7").subnet.cidr).toBe("10.1.1.0/24");
    expect(resolveStaticAddress(network, 6, "2001:db8::51").subnet.cidr).toBe("2001:db8::/64");
  });

  it("refuses a static address outside every subnet, naming them", () => {
    const error = refusal(() => resolveStaticAddress(network, 4, "10.2.0.5"));
    expect(error.code).toBe(status.INVALID_ARGUMENT);
    expect(error.message).toBe("invalid address 10.2.0.5: it is outside every IPv4 subnet of network n1 (10.1.0.0/24, 10.1.1.0/24)");
  });

  it("refuses the gateway, the network and broadcast addresses and the wrong family", () => {
    expect(refusal(() => resolveStaticAddress(network, 4, "10.1.0.1")).code).toBe(status.ALREADY_EXISTS);
    expect(refusal(() => resolveStaticAddress(network, 4, "10.1.0.0")).code).toBe(status.INVALID_ARGUMENT);
    expect(refusal(() => resolveStaticAddress(network, 4, "10.1.0.255")).code).toBe(status.INVALID_ARGUMENT);
    expect(refusal(() => resolveStaticAddress(network, 4, "2001:db8::5")).message).toContain("it is IPv6 but IPv4 was asked for");
  });

  it("finds the lowest free usable address from a start", () => {
    const bounds = poolBounds({ cidr: "10.0.0.0/30", gateway: "", ipv6: false }, parsePrefix("10.0.0.0/30"));
    const taken = new Set([parseAddress("10.0.0.1").value]);
    expect(lowestFree(bounds, 0n, (v) => !taken.has(v))).toBe(parseAddress("10.0.0.2").value);
    taken.add(parseAddress("10.0.0.2").value);
    expect(lowestFree(bounds, 0n, (v) => !taken.has(v))).toBeUndefined();
  });

  it("keeps automatic addresses inside the ip range, never on the subnet's broadcast", () => {
    const subnet = { cidr: "10.1.0.0/24", gateway: "10.1.0.1", ipv6: false, pool: { ipRange: "10.1.0.128/25", auxAddresses: {} } };
    const bounds = poolBounds(subnet, parsePrefix(subnet.cidr));
    expect([bounds.first, bounds.last]).toEqual([parseAddress("10.1.0.128").value, parseAddress("10.1.0.254").value]);
  });
});

describe("keys", () => {
  it("keeps ids readable and escapes what KV keys do not allow", () => {
    expect(keyToken("web_1-a")).toBe("web_1-a");
    expect(keyToken("a.b:c/d")).toBe("a=2eb=3ac=2fd");
    expect(addressKey("n.1", parseAddress("2001:db8::5"))).toBe("addr.n=2e1.2001-db8--5");
  });

  it("names one allocation per endpoint, family and incarnation of a network", () => {
    const record = { networkId: "n1", incarnation: "i1", endpointId: "e/1", host: "h1", address: "10.0.0.2/24", subnet: "10.0.0.0/24", ipv6: false, kind: 1 };
    expect(allocationMessageId(record)).toBe("alloc.n1.i1.4.e=2f1");
    expect(allocationMessageId({ ...record, address: "10.0.0.3/24" })).toBe(allocationMessageId(record));
    expect(allocationMessageId({ ...record, ipv6: true })).not.toBe(allocationMessageId(record));
    expect(allocationMessageId({ ...record, incarnation: "i2" })).not.toBe(allocationMessageId(record));
  });
});
