import { describe, expect, it } from "vitest";
import { ParentKind, Subnet, type Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { containerNetns, containerRoutes, dummyParentName } from "../../services/planner/plan.js";

function network(overrides: Partial<Network>): Network {
  return {
    id: "0123456789abcdef0123456789abcdef",
    name: "n1",
    driver: "ipvlan",
    mode: "l2",
    flag: "bridge",
    parent: { name: "eth0", kind: ParentKind.PARENT_KIND_EXISTING, base: "", vlanId: 0 },
    subnets: [
      { cidr: "192.168.140.0/24", gateway: "192.168.140.1", ipv6: false },
      { cidr: "192.168.142.0/24", gateway: "192.168.142.1", ipv6: false },
      { cidr: "2001:db8:abc9::/64", gateway: "2001:db8:abc9::22", ipv6: true },
    ].map((subnet) => Subnet.fromPartial(subnet)),
    internal: false,
    ipv6: true,
    notes: [],
    createdAt: "",
    traceparent: "",
    intentId: "",
    deleting: false,
    hostShim: false,
    hostShims: [],
    ...overrides,
  };
}

describe("routes inside a container", () => {
  it("l2: default via the first gateway of each family the container has", () => {
    expect(containerRoutes(network({}), ["192.168.140.2/24", "2001:db8:abc9::1/64"])).toEqual([
      { dst: "default", via: "192.168.140.1", ipv6: false },
      { dst: "default", via: "2001:db8:abc9::22", ipv6: true },
    ]);
  });

  it("l2: default via the gateway of the subnet the address is in (ipvlan114's second subnet)", () => {
    expect(containerRoutes(network({}), ["192.168.142.10/24"])).toEqual([{ dst: "default", via: "192.168.142.1", ipv6: false }]);
  });

  it("l3 and l3s: default dev eth0 per family, whatever the gateways", () => {
    for (const mode of ["l3", "l3s"]) {
      expect(containerRoutes(network({ mode }), ["192.168.112.2/24", "2001:db8:abc6::10/64"])).toEqual([
        { dst: "default", via: "", ipv6: false },
        { dst: "default", via: "", ipv6: true },
      ]);
    }
  });

  it("internal: no default route", () => {
    expect(containerRoutes(network({ internal: true }), ["192.168.140.2/24"])).toEqual([]);
  });
});

describe("names the agents share", () => {
  it("names dummy parents within the 15-character limit", () => {
    expect(dummyParentName("0123456789abcdef")).toBe("dm-0123456789ab");
  });

  it("puts the host in the namespace name so agents sharing /run/netns keep apart", () => {
    expect(containerNetns("c1", "h1")).toBe("c1@h1");
  });
});
