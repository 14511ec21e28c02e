import { describe, expect, it } from "vitest";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { desiredStateFor, hostsOnNetwork } from "../../services/planner/plan.js";
import { hostsFileFor } from "../../services/link-agent/hosts-file.js";

function endpoint(container: string, host: string, networkId: string, addresses: string[]): Endpoint {
  return {
    id: `id-${container}`,
    networkId,
    networkName: `name-${networkId}`,
    container,
    host,
    netns: `${container}@${host}`,
    ifname: "eth0",
    addresses,
    routes: [],
    createdAt: "",
    traceparent: "",
    intentId: "",
  };
}

const c1 = endpoint("c1", "h1", "net1", ["192.168.1.2/24", "2001:db8::2/64"]);
const c2 = endpoint("c2", "h2", "net1", ["192.168.1.3/24"]);
const other = endpoint("o1", "h2", "net2", ["10.0.0.2/24"]);

describe("name resolution between containers", () => {
  it("gives a host the names of every container, on any host, of the networks its containers are on", () => {
    expect(desiredStateFor("h1", [], [c1, c2, other]).names).toEqual([
      { networkId: "net1", name: "c1", addresses: ["192.168.1.2", "2001:db8::2"] },
      { networkId: "net1", name: "c2", addresses: ["192.168.1.3"] },
    ]);
    expect(desiredStateFor("h2", [], [c1, c2, other]).names.map((n) => n.name)).toEqual(["c1", "c2", "o1"]);
    expect(desiredStateFor("h3", [], [c1, c2, other]).names).toEqual([]);
  });

  it("rewrites the hosts with containers on the network when one comes or goes", () => {
    expect(hostsOnNetwork("net1", [c1, c2, other]).sort()).toEqual(["h1", "h2"]);
    expect(hostsOnNetwork("net2", [c1, c2, other])).toEqual(["h2"]);
  });

  it("writes a hosts file with loopback names and the network's containers only", () => {
    const names = desiredStateFor("h2", [], [c1, c2, other]).names;
    expect(hostsFileFor(c2, names)).toBe(
      [
        "# Written by the Trellis agent for container c2 on network name-net1.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "192.168.1.2\tc1",
        "2001:db8::2\tc1",
        "192.168.1.3\tc2",
        "",
      ].join("\n"),
    );
  });
});
