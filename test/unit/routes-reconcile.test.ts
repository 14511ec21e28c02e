import { describe, expect, it } from "vitest";
import { TRELLIS_ROUTE_PROTOCOL, type Route } from "../../libs/netlink/index.js";
import type { KvWatchEntry } from "@nats-io/kv";
import { Network, type Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { BlockRecord } from "../../libs/proto/gen/trellis/v1/ipam.js";
import type { RouteAnnouncement } from "../../libs/proto/gen/trellis/v1/routes.js";
import { EndpointState, type EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import { servedPrefixes, type HostServing } from "../../services/link-agent/routes/announce.js";
import { Grants, routedNetworkIds } from "../../services/link-agent/routes/grants.js";
import { RouteBelief } from "../../services/link-agent/routes/belief.js";
import { changesAt, routeChanges } from "../../services/link-agent/routes/reconcile.js";

const NOW = 1_000_000;

function network(id: string, mode: string): Network {
  return Network.fromPartial({ id, name: id, driver: "ipvlan", mode, flag: "bridge" });
}

function endpoint(id: string, host: string, networkId: string, addresses: string[]): Endpoint {
  return { id, networkId, networkName: networkId, container: id, host, netns: `${id}@${host}`, ifname: "eth0", addresses, routes: [], createdAt: "", traceparent: "", intentId: "" };
}

function desired(endpoints: Endpoint[], grants: [string, string][] = []): HostServing {
  return {
    networks: [network("l3net", "l3"), network("l2net", "l2")],
    endpoints,
    grants: grants.map(([networkId, prefix]) => ({ networkId, prefix })),
  };
}

/** An entry of IPAM's block keys, as a watch delivers it. */
function blockEntry(key: string, record: Partial<BlockRecord> | undefined): KvWatchEntry {
  const value = record ? BlockRecord.encode(BlockRecord.fromPartial(record)).finish() : new Uint8Array();
  return { key, value, operation: record ? "PUT" : "DEL" } as KvWatchEntry;
}

function ready(endpointId: string, addresses: string[]): EndpointStatus {
  return { endpointId, host: "h1", container: endpointId, state: EndpointState.ENDPOINT_STATE_READY, message: "", ifindex: 2, addresses, routes: [], updatedAt: "" };
}

function announcement(host: string, nextHops: string | string[], prefixes: [string, string][]): RouteAnnouncement {
  return { host, nextHops: typeof nextHops === "string" ? [nextHops] : nextHops, prefixes: prefixes.map(([networkId, prefix]) => ({ networkId, prefix })), generation: 1, announcedAt: "" };
}

/** One host's grants as Grants.byHost holds them, from "<network id> <prefix>" lines. */
function granted(...lines: string[]): Map<string, Set<string>> {
  const networks = new Map<string, Set<string>>();
  for (const line of lines) grant(networks, line);
  return networks;
}

function grant(networks: Map<string, Set<string>>, line: string): void {
  const [networkId, prefix] = line.split(" ");
  networks.set(networkId!, new Set([...(networks.get(networkId!) ?? []), prefix!]));
}

interface BeliefInput {
  self: string;
  role: "host" | "upstream";
  networks: Set<string>;
  announcements: RouteAnnouncement[];
  grants: Map<string, Map<string, Set<string>>>;
  heartbeats: Map<string, number>;
  now: number;
  silentFromAtLeast?: number;
  hostStaleAfterMs?: Map<string, number>;
}

function input(overrides: Partial<BeliefInput>): BeliefInput {
  return {
    self: "h1",
    role: "host",
    networks: new Set(["l3net"]),
    announcements: [announcement("h2", "192.168.1.12", [["l3net", "10.1.0.2/32"]]), announcement("h3", "192.168.1.13", [["l3net", "10.1.0.3/32"]])],
    grants: new Map([
      ["h2", granted("l3net 10.1.0.2/32")],
      ["h3", granted("l3net 10.1.0.3/32")],
    ]),
    heartbeats: new Map([
      ["h2", NOW - 1000],
      ["h3", NOW - 1000],
    ]),
    now: NOW,
    ...overrides,
  };
}

/** A belief fed with `input` as an installer feeds it, with what it logged; `clock` may be moved afterwards. */
function believing(given: BeliefInput) {
  const clock = { at: given.now, from: given.silentFromAtLeast ?? 0 };
  const lines: string[] = [];
  const belief = new RouteBelief({
    self: given.self,
    role: given.role,
    staleAfterMs: 10_000,
    grants: given.grants,
    clock: { now: () => clock.at, silentFromAtLeast: () => clock.from },
    log: (line) => lines.push(line),
  });
  belief.setNetworks(given.networks);
  for (const [host, at] of given.heartbeats) belief.heard(host, at, given.hostStaleAfterMs?.get(host) ?? 10_000);
  for (const one of given.announcements) belief.setAnnouncement(one.host, one);
  belief.refresh();
  return { belief, clock, lines, routes: () => [...belief.routes].sort(([a], [b]) => a.localeCompare(b)) };
}

const refusals = (lines: string[]) => lines.filter((line) => line.startsWith("refused "));
const silences = (lines: string[]) => lines.filter((line) => line.includes("has not heartbeaten")).map((line) => line.split(" ")[1]);

function kernelRoute(dst: string, gateway: string | undefined, protocol = TRELLIS_ROUTE_PROTOCOL): Route {
  return { family: 4, dst, gateway, protocol, scope: 0, table: 254 };
}

describe("servedPrefixes", () => {
  const state = desired([
    endpoint("a", "h1", "l3net", ["10.1.0.2/16"]),
    endpoint("b", "h1", "l2net", ["192.168.5.2/24"]),
    endpoint("c", "h1", "l3net", ["10.1.0.4/16"]),
  ]);

  it("announces host routes of READY endpoints of L3 networks, as the kernel reports their addresses", () => {
    const statuses = [ready("a", ["10.1.0.2/16", "fd00::2/64"]), ready("b", ["192.168.5.2/24"]), { ...ready("c", ["10.1.0.4/16"]), state: EndpointState.ENDPOINT_STATE_FAILED }];
    expect(servedPrefixes(state, statuses, ["192.168.1.11"])).toEqual([{ networkId: "l3net", prefix: "10.1.0.2/32" }]);
  });

  it("announces the prefixes of each family the host has a next hop of", () => {
    const statuses = [ready("a", ["10.1.0.2/16", "fd00::2/64"])];
    expect(servedPrefixes(state, statuses, ["fd99::11"])).toEqual([{ networkId: "l3net", prefix: "fd00::2/128" }]);
    expect(servedPrefixes(state, statuses, ["192.168.1.11", "fd99::11"])).toEqual([
      { networkId: "l3net", prefix: "10.1.0.2/32" },
      { networkId: "l3net", prefix: "fd00::2/128" },
    ]);
  });

  it("announces the granted block or borrowed address that covers a READY endpoint, and a block only while one is READY in it", () => {
    const blocks = desired(
      [endpoint("a", "h1", "l3net", ["10.1.0.2/16"]), endpoint("c", "h1", "l3net", ["10.1.0.4/16"]), endpoint("d", "h1", "l3net", ["10.1.0.70/16"]), endpoint("e", "h1", "l3net", ["10.1.0.200/16"])],
      [["l3net", "10.1.0.0/26"], ["l3net", "10.1.0.64/26"], ["l3net", "10.1.0.70/32"], ["l3net", "10.1.0.128/26"]],
    );
    const statuses = [ready("a", ["10.1.0.2/16"]), ready("c", ["10.1.0.4/16"]), ready("d", ["10.1.0.70/16"]), ready("e", ["10.1.0.200/16"])];
    expect(servedPrefixes(blocks, statuses, ["192.168.1.11"])).toEqual([
      { networkId: "l3net", prefix: "10.1.0.0/26" },
      { networkId: "l3net", prefix: "10.1.0.200/32" },
      { networkId: "l3net", prefix: "10.1.0.70/32" },
    ]);
    expect(servedPrefixes(blocks, [], ["192.168.1.11"])).toEqual([]);
  });
});

describe("grants", () => {
  it("gives each host the blocks and borrowed addresses of IPAM's block records, in canonical form, until they go", () => {
    const grants = new Grants();
    grants.apply(blockEntry("block.l3net.10-1-0-64-26", { networkId: "l3net", host: "h1", cidr: "10.1.0.64/26" }));
    grants.apply(blockEntry("block.l3net.fd00--7-128", { networkId: "l3net", host: "h1", cidr: "fd00:0::7/128", ipv6: true, borrowed: true }));
    grants.apply(blockEntry("block.l3net.10-1-0-128-26", { networkId: "l3net", host: "h2", cidr: "10.1.0.128/26" }));
    expect(grants.of("h1")).toEqual([{ networkId: "l3net", prefix: "10.1.0.64/26" }, { networkId: "l3net", prefix: "fd00::7/128" }]);
    expect(grants.of("h2")).toEqual([{ networkId: "l3net", prefix: "10.1.0.128/26" }]);
    grants.apply(blockEntry("block.l3net.10-1-0-128-26", undefined));
    expect(grants.byHost.has("h2")).toBe(false);
  });

  it("refuses a value that is no block record, and keeps what it had", () => {
    const grants = new Grants();
    grants.apply(blockEntry("block.l3net.10-1-0-64-26", { networkId: "l3net", host: "h1", cidr: "10.1.0.64/26" }));
    expect(() => grants.apply(blockEntry("block.l3net.x", { networkId: "l3net", host: "h1", cidr: "nonsense" }))).toThrow("not a block record");
    expect(() => grants.apply({ key: "block.l3net.y", value: new Uint8Array([0xff, 0xff, 0xff]), operation: "PUT" } as KvWatchEntry)).toThrow();
    expect(grants.of("h1")).toEqual([{ networkId: "l3net", prefix: "10.1.0.64/26" }]);
  });

  it("installs routes for the L3 and L3S networks only", () => {
    expect([...routedNetworkIds([network("l3net", "l3"), network("l2net", "l2"), network("l3snet", "l3s")])]).toEqual(["l3net", "l3snet"]);
  });
});

describe("RouteBelief", () => {
  it("lets a host that heartbeats less often stay silent as long as its interval says, and no longer", () => {
    const { routes, lines } = believing(input({ heartbeats: new Map([["h2", NOW - 20_000], ["h3", NOW - 20_000]]), hostStaleAfterMs: new Map([["h2", 50_000]]) }));
    expect(routes().map(([dst]) => dst)).toEqual(["10.1.0.2/32"]);
    expect(silences(lines)).toEqual(["h3"]);
  });

  it("believes granted prefixes of live hosts, with their next hop", () => {
    const { routes, lines, belief } = believing(input({}));
    expect(routes()).toEqual([
      ["10.1.0.2/32", "192.168.1.12"],
      ["10.1.0.3/32", "192.168.1.13"],
    ]);
    expect(lines).toEqual([]);
    expect(belief.refused).toBe(0);
  });

  it("refuses a prefix IPAM did not give to the announcing host", () => {
    const forged = announcement("h2", "192.168.1.12", [["l3net", "10.1.0.2/32"], ["l3net", "10.1.0.3/32"]]);
    const { belief, lines } = believing(input({ announcements: [forged, announcement("h3", "192.168.1.13", [["l3net", "10.1.0.3/32"]])] }));
    expect(belief.routes.get("10.1.0.3/32")).toBe("192.168.1.13");
    expect(refusals(lines)).toEqual(["refused announcement of 10.1.0.3/32 (network l3net) by host h2: IPAM has not given 10.1.0.3/32 to host h2 in network l3net"]);
    expect(belief.refused).toBe(1);
  });

  it("refuses malformed prefixes and prefixes of a family the host announces no next hop of", () => {
    const bad = announcement("h2", "fd00::12", [["l3net", "10.1.0.2/32"], ["l3net", "banana"]]);
    const { belief, lines } = believing(input({ announcements: [bad] }));
    expect(belief.routes.size).toBe(0);
    expect(refusals(lines).map((line) => line.split(": ")[1])).toEqual(['host h2 announces no IPv4 next hop (it has ["fd00::12"])', "not a prefix"]);
  });

  it("routes each prefix via the announcing host's next hop of its family", () => {
    const dual = announcement("h2", ["192.168.1.12", "fd99::12"], [["l3net", "10.1.0.2/32"], ["l3net", "fd00::2/128"]]);
    const grants = new Map([["h2", granted("l3net 10.1.0.2/32", "l3net fd00::2/128")]]);
    expect(believing(input({ announcements: [dual], grants })).routes()).toEqual([
      ["10.1.0.2/32", "192.168.1.12"],
      ["fd00::2/128", "fd99::12"],
    ]);
  });

  it("sets aside every prefix of a host whose heartbeat is too old, or missing", () => {
    const { belief, lines } = believing(input({ heartbeats: new Map([["h3", NOW - 10_001]]) }));
    expect(belief.routes.size).toBe(0);
    expect(silences(lines)).toEqual(["h2", "h3"]);
  });

  it("withdraws a host's routes when its window ends, and believes them again when it heartbeats", () => {
    const { belief, clock, lines } = believing(input({}));
    clock.at = NOW + 8_999;
    belief.refresh();
    expect(belief.routes.size).toBe(2);
    belief.heard("h2", NOW + 8_999, 10_000);
    clock.at = NOW + 9_001;
    belief.refresh();
    expect([...belief.routes.keys()]).toEqual(["10.1.0.2/32"]);
    expect(silences(lines)).toEqual(["h3"]);
    expect([...belief.takeChanged()].sort()).toEqual(["10.1.0.2/32", "10.1.0.3/32"]);
    belief.heard("h3", NOW + 9_001, 10_000);
    belief.refresh();
    expect(belief.routes.get("10.1.0.3/32")).toBe("192.168.1.13");
    expect([...belief.takeChanged()]).toEqual(["10.1.0.3/32"]);
  });

  it("counts no host silent from before contact with the bus came back, and a host still silent a window after it", () => {
    const old = new Map([["h2", NOW - 60_000], ["h3", NOW - 60_000]]);
    expect(silences(believing(input({ heartbeats: old, silentFromAtLeast: NOW - 9_000 })).lines)).toEqual([]);
    expect(silences(believing(input({ heartbeats: old, silentFromAtLeast: NOW - 10_001 })).lines)).toEqual(["h2", "h3"]);
    // A host never heard of is not made alive by the return.
    expect(silences(believing(input({ heartbeats: new Map([["h3", NOW]]), silentFromAtLeast: NOW })).lines)).toEqual(["h2"]);
  });

  it("gives every silent host a whole window again when contact comes back", () => {
    const { belief, clock } = believing(input({ heartbeats: new Map([["h2", NOW - 60_000], ["h3", NOW]]) }));
    expect([...belief.routes.keys()]).toEqual(["10.1.0.3/32"]);
    clock.from = NOW;
    belief.contactRegained();
    belief.refresh();
    expect(belief.routes.size).toBe(2);
    clock.at = NOW + 10_001;
    belief.refresh();
    expect(belief.routes.size).toBe(0);
  });

  it("ignores its own announcement", () => {
    expect(believing(input({ self: "h2" })).belief.routes.has("10.1.0.2/32")).toBe(false);
  });

  it("installs only networks present on a host agent, every L3 network on an upstream, and follows the networks as they come and go", () => {
    const { belief } = believing(input({ networks: new Set() }));
    expect(belief.routes.size).toBe(0);
    belief.setNetworks(new Set(["l3net"]));
    belief.refresh();
    expect(belief.routes.size).toBe(2);
    belief.setNetworks(new Set());
    belief.refresh();
    expect(belief.routes.size).toBe(0);
    expect(believing(input({ networks: new Set(), role: "upstream", self: "u1" })).belief.routes.size).toBe(2);
  });

  it("lets the same host win everywhere when two hosts are granted one prefix, and the other take over when it goes", () => {
    const grants = new Map([
      ["h2", granted("l3net 10.1.0.9/32")],
      ["h3", granted("l3net 10.1.0.9/32")],
    ]);
    const announcements = [announcement("h3", "192.168.1.13", [["l3net", "10.1.0.9/32"]]), announcement("h2", "192.168.1.12", [["l3net", "10.1.0.9/32"]])];
    const { belief, lines } = believing(input({ grants, announcements }));
    expect(belief.routes.get("10.1.0.9/32")).toBe("192.168.1.12");
    expect(refusals(lines)).toEqual(["refused announcement of 10.1.0.9/32 (network l3net) by host h3: also announced by host h2, which wins"]);
    belief.setAnnouncement("h2", undefined);
    belief.refresh();
    expect(belief.routes.get("10.1.0.9/32")).toBe("192.168.1.13");
    expect(belief.refused).toBe(0);
  });

  it("follows a grant taken away and given back", () => {
    const grants = new Map([["h2", granted("l3net 10.1.0.2/32")]]);
    const { belief, lines } = believing(input({ grants, announcements: [announcement("h2", "192.168.1.12", [["l3net", "10.1.0.2/32"]])] }));
    expect(belief.routes.size).toBe(1);
    grants.get("h2")!.clear();
    belief.grantsChanged("h2");
    belief.refresh();
    expect(belief.routes.size).toBe(0);
    expect(refusals(lines)).toHaveLength(1);
    grant(grants.get("h2")!, "l3net 10.1.0.2/32");
    belief.grantsChanged("h2");
    belief.refresh();
    expect(belief.routes.get("10.1.0.2/32")).toBe("192.168.1.12");
  });

  it("derives again only the host that changed: one announcement among a thousand hosts changes one route", () => {
    const hosts = Array.from({ length: 1000 }, (_, i) => `h${i + 2}`);
    const grants = new Map(hosts.map((host, i) => [host, granted(`l3net 10.9.${i >> 8}.${i & 255}/32`)]));
    const heartbeats = new Map(hosts.map((host) => [host, NOW]));
    const announcements = hosts.map((host, i) => announcement(host, "192.168.1.12", [["l3net", `10.9.${i >> 8}.${i & 255}/32`]]));
    const { belief } = believing(input({ grants, heartbeats, announcements }));
    expect(belief.routes.size).toBe(1000);
    belief.takeChanged();
    grant(grants.get("h2")!, "l3net 10.8.0.1/32");
    belief.setAnnouncement("h2", announcement("h2", "192.168.1.12", [["l3net", "10.9.0.0/32"], ["l3net", "10.8.0.1/32"]]));
    belief.refresh();
    expect([...belief.takeChanged()]).toEqual(["10.8.0.1/32"]);
  });
});

describe("routeChanges", () => {
  const wanted = new Map([
    ["10.1.0.2/32", "192.168.1.12"],
    ["10.1.0.3/32", "192.168.1.13"],
  ]);

  it("changes nothing when the kernel already has every route right", () => {
    const kernel = [kernelRoute("10.1.0.2/32", "192.168.1.12"), kernelRoute("10.1.0.3/32", "192.168.1.13"), kernelRoute("192.168.1.0/24", undefined, 2)];
    expect(routeChanges(kernel, wanted)).toEqual({ add: [], replace: [], remove: [], blocked: [] });
  });

  it("adds what is missing, replaces a changed next hop, removes what is stale", () => {
    const kernel = [kernelRoute("10.1.0.3/32", "192.168.1.99"), kernelRoute("10.1.0.7/32", "192.168.1.17")];
    expect(routeChanges(kernel, wanted)).toEqual({
      add: [{ dst: "10.1.0.2/32", gateway: "192.168.1.12" }],
      replace: [{ dst: "10.1.0.3/32", gateway: "192.168.1.13" }],
      remove: [{ dst: "10.1.0.7/32", gateway: "192.168.1.17", linkIndex: undefined, family: 4 }],
      blocked: [],
    });
  });

  it("never touches routes of other protocols, even for a wanted prefix", () => {
    const kernel = [kernelRoute("10.1.0.2/32", "192.168.1.50", 4), kernelRoute("10.9.0.0/16", "192.168.1.1", 3)];
    const changes = routeChanges(kernel, wanted);
    expect(changes.blocked).toEqual([{ dst: "10.1.0.2/32", protocol: 4 }]);
    expect(changes.remove).toEqual([]);
    expect(changes.add).toEqual([{ dst: "10.1.0.3/32", gateway: "192.168.1.13" }]);
  });
});

describe("changesAt", () => {
  it("compares only the prefixes whose wanted route changed", () => {
    const applied = new Map([
      ["10.1.0.2/32", "192.168.1.12"],
      ["10.1.0.3/32", "192.168.1.13"],
      ["10.1.0.4/32", "192.168.1.14"],
    ]);
    const wanted = new Map([
      ["10.1.0.2/32", "192.168.1.99"],
      ["10.1.0.4/32", "192.168.1.0"],
      ["10.1.0.5/32", "192.168.1.15"],
    ]);
    expect(changesAt(applied, wanted, ["10.1.0.2/32", "10.1.0.3/32", "10.1.0.5/32", "10.1.0.6/32"])).toEqual({
      add: [{ dst: "10.1.0.5/32", gateway: "192.168.1.15" }],
      replace: [{ dst: "10.1.0.2/32", gateway: "192.168.1.99" }],
      remove: [{ dst: "10.1.0.3/32", gateway: "192.168.1.13" }],
      blocked: [],
    });
  });
});
