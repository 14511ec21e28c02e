import { describe, expect, it } from "vitest";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { nameKey } from "../../libs/bus/subjects.js";
import { nameEntryOf } from "../../services/planner/store.js";
import { NameTable } from "../../services/link-agent/dns/name-table.js";

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

function tableOf(...endpoints: Endpoint[]): NameTable {
  const table = new NameTable();
  for (const e of endpoints) table.put(e.networkId, nameKey(e.networkId, e.container), nameEntryOf(e));
  return table;
}

describe("name resolution between containers", () => {
  it("names a container by its name and its addresses without prefix length", () => {
    expect(nameEntryOf(c1)).toEqual({ networkId: "net1", name: "c1", addresses: ["192.168.1.2", "2001:db8::2"] });
  });

  it("finds a container of the asker's networks, wherever it runs, by family", () => {
    const table = tableOf(c1, c2, other);
    expect(table.lookup(["net1"], "c1")).toEqual({ ipv4: ["192.168.1.2"], ipv6: ["2001:db8::2"] });
    expect(table.lookup(["net1"], "c2")).toEqual({ ipv4: ["192.168.1.3"], ipv6: [] });
  });

  it("ignores case and a final dot", () => {
    const table = tableOf(c1);
    expect(table.lookup(["net1"], "C1.")).toEqual({ ipv4: ["192.168.1.2"], ipv6: ["2001:db8::2"] });
  });

  it("does not show a container the names of networks it is not on", () => {
    const table = tableOf(c1, other);
    expect(table.lookup(["net1"], "o1")).toBeUndefined();
    expect(table.lookup(["net1", "net2"], "o1")).toEqual({ ipv4: ["10.0.0.2"], ipv6: [] });
  });

  it("forgets a removed container, and every name of a network the host no longer serves", () => {
    const table = tableOf(c1, c2);
    table.delete("net1", nameKey("net1", "c1"));
    expect(table.lookup(["net1"], "c1")).toBeUndefined();
    expect(table.lookup(["net1"], "c2")).toBeDefined();
    table.dropNetwork("net1");
    expect(table.lookup(["net1"], "c2")).toBeUndefined();
  });

  it("takes a changed entry's new addresses", () => {
    const table = tableOf(c1);
    table.put("net1", nameKey("net1", "c1"), { networkId: "net1", name: "c1", addresses: ["192.168.1.9"] });
    expect(table.lookup(["net1"], "c1")).toEqual({ ipv4: ["192.168.1.9"], ipv6: [] });
  });
});
