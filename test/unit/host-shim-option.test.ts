import { describe, expect, it } from "vitest";
import { isHostShimKey, hostShimKey, desiredKey, networkHostShimsFilter } from "../../libs/bus/subjects.js";
import { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { hostShimEndpointId, isHostShimEndpointId } from "../../services/ipam/host-shim-id.js";
import { validateNetworkSpec } from "../../services/planner/validate.js";

function spec(options: Record<string, string>): NetworkSpec {
  return NetworkSpec.fromPartial({ name: "n1", driver: "ipvlan", options });
}

describe("-o host_shim", () => {
  it("is off by default and on only when asked, in every mode", () => {
    expect(validateNetworkSpec(spec({})).hostShim).toBe(false);
    expect(validateNetworkSpec(spec({ host_shim: "false" })).hostShim).toBe(false);
    for (const ipvlan_mode of ["l2", "l3", "l3s"]) {
      expect(validateNetworkSpec(spec({ host_shim: "true", ipvlan_mode })).hostShim).toBe(true);
    }
  });

  it.each(["yes", "1", "TRUE", "on", " true"])("refuses host_shim=%j, saying what is valid", (value) => {
    expect(() => validateNetworkSpec(spec({ host_shim: value }))).toThrow(`invalid host_shim "${value}": must be true or false`);
  });

  it("is named among the valid options when an unknown one is given", () => {
    expect(() => validateNetworkSpec(spec({ hostshim: "true" }))).toThrow(/unknown option "hostshim": valid options are .*host_shim/);
  });
});

describe("host shim keys and ids", () => {
  it("lie under the host's desired keys, told apart from its endpoints' keys", () => {
    const key = hostShimKey("h1.example", "0123456789abcdef0123456789abcdef");
    expect(key).toBe("h1=2eexample.shim.0123456789abcdef0123456789abcdef");
    expect(isHostShimKey(key)).toBe(true);
    expect(isHostShimKey(desiredKey("shim", "0123456789abcdef0123456789abcdef"))).toBe(false);
    expect(networkHostShimsFilter("abc")).toBe("*.shim.abc");
  });

  it("give one IPAM endpoint id per network and host, never one a container could have", () => {
    const id = hostShimEndpointId("net1", "h1");
    expect(id).toHaveLength(32);
    expect(hostShimEndpointId("net1", "h1")).toBe(id);
    expect(hostShimEndpointId("net1", "h2")).not.toBe(id);
    expect(isHostShimEndpointId(id)).toBe(true);
    expect(isHostShimEndpointId("0123456789abcdef0123456789abcdef")).toBe(false);
  });
});
