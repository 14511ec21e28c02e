import { status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { Network, ParentKind, type Parent } from "../../libs/proto/gen/trellis/v1/network.js";
import type { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { StatusError } from "../../libs/grpc/status-error.js";
import { checkHostSupports } from "../../services/planner/host-support.js";

const parents: Record<string, Parent> = {
  existing: { name: "eth0", kind: ParentKind.PARENT_KIND_EXISTING, base: "", vlanId: 0 },
  vlan: { name: "eth0.20", kind: ParentKind.PARENT_KIND_VLAN, base: "eth0", vlanId: 20 },
  dummy: { name: "dm-0123456789ab", kind: ParentKind.PARENT_KIND_DUMMY, base: "", vlanId: 0 },
};

function host(missingLinkKinds: string[]): HostRecord {
  return { host: "h1", address: "192.168.1.11", role: "host", heartbeatAt: "2024-01-01T00:00:00.000Z", missingLinkKinds, interfaces: [], heartbeatIntervalMs: 0 };
}

function network(parent: keyof typeof parents, internal = false): Network {
  return Network.fromPartial({ name: "n1", parent: parents[parent], internal });
}

/** The refusal's code and message, or undefined when the host is accepted. */
function refusal(missing: string[], on: Network): { code: string; message: string } | undefined {
  try {
    checkHostSupports(host(missing), on);
    return undefined;
  } catch (error) {
    return { code: status[(error as StatusError).code], message: (error as StatusError).message };
  }
}

describe("placing a container on a host that lacks link kinds", () => {
  it("accepts a host that reports nothing missing (or an older agent that reports nothing at all)", () => {
    for (const parent of Object.keys(parents)) expect(refusal([], network(parent))).toBeUndefined();
  });

  it("refuses a host without ipvlan whatever the network, saying what is wrong and what would be right", () => {
    for (const parent of ["existing", "vlan", "dummy"]) {
      expect(refusal(["ipvlan"], network(parent))).toEqual({
        code: "FAILED_PRECONDITION",
        message: "host h1 cannot run ipvlan containers: its kernel has no ipvlan support (modprobe ipvlan, or choose another host)",
      });
    }
  });

  it("refuses a host without 802.1Q only for a network whose parent is a VLAN sub-interface", () => {
    expect(refusal(["vlan"], network("vlan"))).toEqual({
      code: "FAILED_PRECONDITION",
      message:
        "host h1 cannot run containers of network n1: its kernel has no 802.1Q support for the network's parent eth0.20, a VLAN sub-interface (modprobe 8021q, or choose another host)",
    });
    expect(refusal(["vlan"], network("existing"))).toBeUndefined();
    expect(refusal(["vlan"], network("dummy"))).toBeUndefined();
  });

  it("refuses a host without dummy only for a network on a dummy parent, saying why it has one", () => {
    expect(refusal(["dummy"], network("dummy"))?.message).toBe(
      "host h1 cannot run containers of network n1: its kernel has no dummy support for the network's parent, a dummy link as the network has no -o parent (modprobe dummy, or choose another host)",
    );
    expect(refusal(["dummy"], network("dummy", true))?.message).toContain("a dummy link as the network is --internal (modprobe dummy");
    expect(refusal(["dummy"], network("existing"))).toBeUndefined();
    expect(refusal(["dummy"], network("vlan"))).toBeUndefined();
  });

  it("names every kind the container needs and the host lacks, in one refusal", () => {
    expect(refusal(["ipvlan", "vlan", "dummy"], network("vlan"))?.message).toBe(
      "host h1 cannot run containers of network n1: its kernel has no ipvlan support, nor 802.1Q support for the network's parent eth0.20, a VLAN sub-interface (modprobe ipvlan 8021q, or choose another host)",
    );
    expect(refusal(["ipvlan", "vlan", "dummy"], network("existing"))?.message).toBe(
      "host h1 cannot run ipvlan containers: its kernel has no ipvlan support (modprobe ipvlan, or choose another host)",
    );
  });

  it("ignores kinds it does not know, which a newer agent may report", () => {
    expect(refusal(["macvlan"], network("vlan"))).toBeUndefined();
  });
});
