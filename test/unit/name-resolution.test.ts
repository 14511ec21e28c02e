import { describe, expect, it } from "vitest";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { nameEntryOf } from "../../services/planner/store.js";
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
  it("names a container by its name and its addresses without prefix length", () => {
    expect(nameEntryOf(c1)).toEqual({ networkId: "net1", name: "c1", addresses: ["192.168.1.2", "2001:db8::2"] });
  });

  it("writes a hosts file with loopback names and the network's containers only", () => {
    const names = [c1, c2, other].map(nameEntryOf);
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
