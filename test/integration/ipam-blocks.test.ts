// Per-host blocks of L3 networks on a real nats-server: a host's addresses come from its blocks,
// a full host takes a new block, a full subnet lends single addresses, an empty block goes back.
import { describe, expect, it } from "vitest";
import { useIpamReplicas } from "../support/ipam-replicas.js";

const replicas = useIpamReplicas();
const startReplica = () => replicas.start();

const on = (host: string, endpointId: string, address = "") => ({ networkId: "l3net", endpointId, host, ipv6: false, address });

describe("per-host blocks of an L3 network", () => {
  it("gives each host its own block, a new one when full, lends addresses when none is free, and returns empty blocks", async () => {
    const ipam = await startReplica();
    // A /27 in /29 blocks: four blocks of 8; the subnet's network and broadcast addresses are never given.
    await ipam.allocateSubnets({
      networkId: "l3net",
      withGateway: false,
      subnets: [{ cidr: "10.9.0.0/27", gateway: "", ipv6: false }],
      hostBlocks: { ipv4PrefixLength: 29 },
    });
    const a1 = await ipam.allocateAddress(on("hostA", "a1"));
    const b1 = await ipam.allocateAddress(on("hostB", "b1"));
    expect([a1.address, b1.address]).toEqual(["10.9.0.1/27", "10.9.0.8/27"]);
    expect((await ipam.listBlocks("l3net")).blocks).toEqual([
      { cidr: "10.9.0.0/29", host: "hostA", ipv6: false },
      { cidr: "10.9.0.8/29", host: "hostB", ipv6: false },
    ]);

    // hostA fills its first block (7 usable addresses), then takes the next free block.
    for (let i = 2; i <= 8; i++) await ipam.allocateAddress(on("hostA", `a${i}`));
    expect((await ipam.listBlocks("l3net", "hostA")).blocks.map((b) => b.cidr)).toEqual(["10.9.0.0/29", "10.9.0.16/29"]);
    // hostC takes the last block (7 usable); when it is full, hostC borrows the lowest free address.
    for (let i = 1; i <= 7; i++) await ipam.allocateAddress(on("hostC", `c${i}`));
    const borrowed = await ipam.allocateAddress(on("hostC", "c8"));
    expect(borrowed.address).toBe("10.9.0.9/27");
    const listed = await ipam.listBlocks("l3net");
    expect(listed.blocks.map((b) => `${b.cidr} ${b.host}`)).toEqual(["10.9.0.0/29 hostA", "10.9.0.16/29 hostA", "10.9.0.24/29 hostC", "10.9.0.8/29 hostB"]);
    expect(listed.borrowed).toEqual([{ address: "10.9.0.9", host: "hostC", endpointId: "c8", ipv6: false }]);
    expect((await ipam.listBlocks("l3net", "hostB")).borrowed).toEqual([]);

    // hostB's block stays while hostC's borrowed address is in it; it goes back with the last address.
    await ipam.releaseAddresses("l3net", "b1");
    expect((await ipam.listBlocks("l3net", "hostB")).blocks).toHaveLength(1);
    await ipam.releaseAddresses("l3net", "c8");
    expect((await ipam.listBlocks("l3net", "hostB")).blocks).toEqual([]);
    // The returned block is free for the next host that needs one.
    expect((await ipam.allocateAddress(on("hostD", "d1"))).address).toBe("10.9.0.8/27");
    expect((await ipam.listBlocks("l3net", "hostD")).blocks.map((b) => b.cidr)).toEqual(["10.9.0.8/29"]);
  });

  it("uses /26 IPv4 and /122 IPv6 blocks by default and a static address takes its block for the host", async () => {
    const ipam = await startReplica();
    await ipam.allocateSubnets({
      networkId: "l3net",
      withGateway: false,
      subnets: [
        { cidr: "10.10.0.0/24", gateway: "", ipv6: false },
        { cidr: "fd00:10::/64", gateway: "", ipv6: true },
      ],
      hostBlocks: {},
    });
    await ipam.allocateAddress(on("hostA", "a1"));
    await ipam.allocateAddress({ networkId: "l3net", endpointId: "a1", host: "hostA", ipv6: true, address: "" });
    expect((await ipam.allocateAddress(on("hostB", "b1", "10.10.0.200"))).address).toBe("10.10.0.200/24");
    expect((await ipam.listBlocks("l3net")).blocks).toEqual([
      { cidr: "10.10.0.0/26", host: "hostA", ipv6: false },
      { cidr: "10.10.0.192/26", host: "hostB", ipv6: false },
      { cidr: "fd00:10::/122", host: "hostA", ipv6: true },
    ]);
  });

  it.each([1, 2])("never gives one block to two hosts when %i replica(s) claim concurrently", async (replicas) => {
    const a = await startReplica();
    const b = replicas === 2 ? await startReplica() : a;
    await a.allocateSubnets({
      networkId: "l3net",
      withGateway: false,
      subnets: [{ cidr: "10.11.0.0/24", gateway: "", ipv6: false }],
      hostBlocks: { ipv4PrefixLength: 28 },
    });
    const hosts = Array.from({ length: 8 }, (_, i) => `host${i}`);
    const results = await Promise.all(
      hosts.flatMap((host, h) => Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).allocateAddress(on(host, `${host}-e${i}`)).then((r) => ({ host, h, ...r })))),
    );
    expect(new Set(results.map((r) => r.address)).size).toBe(results.length);
    const { blocks, borrowed } = await a.listBlocks("l3net");
    expect(new Set(blocks.map((block) => block.cidr)).size).toBe(blocks.length);
    expect(borrowed).toEqual([]);
    // Each host's six addresses fit one /28: a replica claims one block per host, not one per concurrent
    // call; two replicas racing for one host may each claim one.
    const perHost = hosts.map((host) => blocks.filter((block) => block.host === host).length);
    expect(perHost.every((count) => count >= 1 && count <= replicas)).toBe(true);
  });
});
