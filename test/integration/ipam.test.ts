import { describe, expect, it } from "vitest";
import { status } from "@grpc/grpc-js";
import { Kvm } from "@nats-io/kv";
import { Buckets } from "../../libs/bus/subjects.js";
import { useIpamReplicas } from "../support/ipam-replicas.js";
import { refusal } from "../support/refusal.js";
import { AddressKind, IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";

const replicas = useIpamReplicas();
const startReplica = () => replicas.start();


/** Every live key and value of the bucket, to prove that a refused call wrote nothing. */
async function bucketSnapshot(): Promise<Map<string, string>> {
  const kv = await new Kvm(replicas.connection()).open(Buckets.ipam);
  const snapshot = new Map<string, string>();
  for await (const key of await kv.keys()) {
    const entry = await kv.get(key);
    if (entry && entry.operation === "PUT") snapshot.set(key, `${entry.revision}:${Buffer.from(entry.value).toString("hex")}`);
  }
  return snapshot;
}

const v4 = (networkId: string, endpointId: string, address = "") => ({ networkId, endpointId, host: "h1", ipv6: false, address });
const v6 = (networkId: string, endpointId: string, address = "") => ({ networkId, endpointId, host: "h1", ipv6: true, address });

describe("ipam over gRPC on a real nats-server", () => {
  it("announces ready and serves on the bound port", async () => {
    const lines: string[] = [];
    await replicas.start((line) => lines.push(line));
    expect(lines.join("\n")).toMatch(/ipam ready on 127\.0\.0\.1:\d+/);
  });

  it("allocates given and default subnets with gateways, and answers a retry the same", async () => {
    const ipam = await startReplica();
    const request = {
      networkId: "db_net",
      withGateway: true,
      subnets: [
        { cidr: "192.168.114.0/24", gateway: "192.168.114.254", ipv6: false },
        { cidr: "", gateway: "", ipv6: false },
        { cidr: "", gateway: "", ipv6: true },
      ],
    };
    const first = await ipam.allocateSubnets(request);
    expect(first.subnets[0]).toEqual({ cidr: "192.168.114.0/24", gateway: "192.168.114.254", ipv6: false });
    expect(first.subnets[1]).toEqual({ cidr: "172.18.0.0/16", gateway: "172.18.0.1", ipv6: false });
    expect(first.subnets[2]!.cidr).toMatch(/^fd[0-9a-f]{2}:[0-9a-f]{1,4}:[0-9a-f]{1,4}::\/64$/);
    expect(await ipam.allocateSubnets(request)).toEqual(first);

    const second = await ipam.allocateSubnets({ networkId: "other", withGateway: false, subnets: [{ cidr: "", gateway: "", ipv6: false }, { cidr: "", gateway: "", ipv6: true }] });
    expect(second.subnets[0]).toEqual({ cidr: "172.19.0.0/16", gateway: "", ipv6: false });
    // One ULA /48 for the cluster: the next /64 of it.
    const ula = first.subnets[2]!.cidr.replace("::/64", "");
    expect(second.subnets[1]!.cidr).toBe(`${ula}:1::/64`);

    const gateways = (await ipam.listAllocations("db_net")).allocations.filter((a) => a.kind === AddressKind.ADDRESS_KIND_GATEWAY);
    expect(gateways.map((g) => g.address).sort()).toEqual(["172.18.0.1/16", "192.168.114.254/24", `${ula}::1/64`].sort());
  });

  it("refuses bad subnets with precise codes and messages, leaving the bucket as it was", async () => {
    const ipam = await startReplica();
    await ipam.allocateSubnets({ networkId: "blue", withGateway: true, subnets: [{ cidr: "10.1.0.0/16", gateway: "", ipv6: false }] });
    const before = await bucketSnapshot();

    const hostBits = await refusal(ipam.allocateSubnets({ networkId: "red", withGateway: true, subnets: [{ cidr: "10.2.1.5/24", gateway: "", ipv6: false }] }));
    expect(hostBits.code).toBe(status.INVALID_ARGUMENT);
    expect(hostBits.details).toBe("invalid subnet 10.2.1.5/24: host bits set, did you mean 10.2.1.0/24?");

    // The first subnet is fine, the second overlaps: nothing at all is reserved.
    const overlap = await refusal(
      ipam.allocateSubnets({
        networkId: "red",
        withGateway: true,
        subnets: [
          { cidr: "10.9.0.0/24", gateway: "", ipv6: false },
          { cidr: "10.1.0.0/24", gateway: "", ipv6: false },
        ],
      }),
    );
    expect(overlap.code).toBe(status.ALREADY_EXISTS);
    expect(overlap.details).toBe("subnet 10.1.0.0/24 overlaps subnet 10.1.0.0/16 of network blue");

    const gateway = await refusal(ipam.allocateSubnets({ networkId: "red", withGateway: true, subnets: [{ cidr: "10.3.0.0/24", gateway: "10.4.0.1", ipv6: false }] }));
    expect(gateway.code).toBe(status.INVALID_ARGUMENT);
    expect(gateway.details).toContain("subnet 10.3.0.0/24");

    const unknown = await refusal(ipam.allocateAddress(v4("red", "e1")));
    expect(unknown.code).toBe(status.NOT_FOUND);
    const outside = await refusal(ipam.allocateAddress(v4("blue", "e1", "10.2.0.5")));
    expect(outside.code).toBe(status.INVALID_ARGUMENT);
    expect(outside.details).toContain("outside every IPv4 subnet of network blue (10.1.0.0/16)");

    expect(await bucketSnapshot()).toEqual(before);
  });

  it("hands out the lowest free address, skipping network, gateway and broadcast, until the pool is full", async () => {
    const ipam = await startReplica();
    await ipam.allocateSubnets({ networkId: "tiny", withGateway: true, subnets: [{ cidr: "10.1.0.0/29", gateway: "", ipv6: false }] });
    const addresses: string[] = [];
    for (let i = 0; i < 5; i++) addresses.push((await ipam.allocateAddress(v4("tiny", `e${i}`))).address);
    expect(addresses).toEqual(["10.1.0.2/29", "10.1.0.3/29", "10.1.0.4/29", "10.1.0.5/29", "10.1.0.6/29"]);
    expect(await ipam.allocateAddress(v4("tiny", "e0"))).toEqual({ address: "10.1.0.2/29", subnet: "10.1.0.0/29" });

    const full = await refusal(ipam.allocateAddress(v4("tiny", "e9")));
    expect(full.code).toBe(status.RESOURCE_EXHAUSTED);
    expect(full.details).toBe("pool 10.1.0.0/29 is full");

    await ipam.releaseAddresses("tiny", "e1");
    expect((await ipam.allocateAddress(v4("tiny", "e9"))).address).toBe("10.1.0.3/29");
  });

  it("takes automatic addresses from the ip range only and never hands out aux addresses", async () => {
    const ipam = await startReplica();
    await ipam.allocateSubnets({
      networkId: "ranged",
      withGateway: true,
      subnets: [{ cidr: "10.6.0.0/24", gateway: "", ipv6: false, pool: { ipRange: "10.6.0.128/30", auxAddresses: { router: "10.6.0.129" } } }],
    });
    const first = await ipam.allocateAddress(v4("ranged", "e1"));
    const second = await ipam.allocateAddress(v4("ranged", "e2"));
    const third = await ipam.allocateAddress(v4("ranged", "e3"));
    expect([first.address, second.address, third.address]).toEqual(["10.6.0.128/24", "10.6.0.130/24", "10.6.0.131/24"]);
    const full = await refusal(ipam.allocateAddress(v4("ranged", "e4")));
    expect(full.details).toBe("pool 10.6.0.128/30 is full");
    expect((await ipam.allocateAddress(v4("ranged", "e4", "10.6.0.20"))).address).toBe("10.6.0.20/24");
    const aux = await refusal(ipam.allocateAddress(v4("ranged", "e5", "10.6.0.129")));
    expect(aux.code).toBe(status.ALREADY_EXISTS);
    expect(aux.details).toBe("address 10.6.0.129 is aux address router of subnet 10.6.0.0/24");
    const kept = (await ipam.listAllocations("ranged")).allocations.filter((a) => a.kind === AddressKind.ADDRESS_KIND_AUX);
    expect(kept.map((a) => a.address)).toEqual(["10.6.0.129/24"]);
  });

  it("reserves static addresses, refuses them to others naming the holder, and frees v4 and v6 at once on release", async () => {
    const ipam = await startReplica();
    await ipam.allocateSubnets({
      networkId: "v6ipvlan139",
      withGateway: true,
      subnets: [
        { cidr: "192.168.140.0/24", gateway: "", ipv6: false },
        { cidr: "2001:db8:abc2::/64", gateway: "2001:db8:abc2::22", ipv6: true },
      ],
    });
    expect(await ipam.allocateAddress(v6("v6ipvlan139", "c1", "2001:db8:abc2::51"))).toEqual({
      address: "2001:db8:abc2::51/64",
      subnet: "2001:db8:abc2::/64",
    });
    expect((await ipam.allocateAddress(v4("v6ipvlan139", "c1", "192.168.140.10"))).address).toBe("192.168.140.10/24");

    const taken = await refusal(ipam.allocateAddress(v6("v6ipvlan139", "c2", "2001:db8:abc2::51")));
    expect(taken.code).toBe(status.ALREADY_EXISTS);
    expect(taken.details).toBe("address 2001:db8:abc2::51 is already in use by endpoint c1 in network v6ipvlan139");
    const gateway = await refusal(ipam.allocateAddress(v6("v6ipvlan139", "c2", "2001:db8:abc2::22")));
    expect(gateway.code).toBe(status.ALREADY_EXISTS);
    expect(gateway.details).toContain("gateway");

    // The reference driver kept static IPv6 addresses after the container was removed.
    await ipam.releaseAddresses("v6ipvlan139", "c1");
    expect((await ipam.allocateAddress(v6("v6ipvlan139", "c2", "2001:db8:abc2::51"))).address).toBe("2001:db8:abc2::51/64");
    expect((await ipam.allocateAddress(v4("v6ipvlan139", "c2", "192.168.140.10"))).address).toBe("192.168.140.10/24");
    const endpoints = (await ipam.listAllocations("v6ipvlan139")).allocations.filter((a) => a.kind === AddressKind.ADDRESS_KIND_ENDPOINT);
    expect(endpoints.map((a) => `${a.endpointId} ${a.address}`).sort()).toEqual(["c2 192.168.140.10/24", "c2 2001:db8:abc2::51/64"]);
  });

  it("releases a network's subnets and leftover addresses, so that both can be taken again", async () => {
    const ipam = await startReplica();
    const request = { networkId: "n1", withGateway: true, subnets: [{ cidr: "10.5.0.0/24", gateway: "", ipv6: false }] };
    await ipam.allocateSubnets(request);
    await ipam.allocateAddress(v4("n1", "e1"));
    await ipam.releaseSubnets("n1");
    await ipam.releaseSubnets("n1");
    expect((await refusal(ipam.listAllocations("n1"))).code).toBe(status.NOT_FOUND);
    await ipam.allocateSubnets({ ...request, networkId: "n2" });
    expect((await ipam.allocateAddress(v4("n2", "e1"))).address).toBe("10.5.0.2/24");
    expect([...(await bucketSnapshot()).keys()].filter((key) => key.includes(".n1."))).toEqual([]);
  });

  it("never hands one address to two endpoints when two replicas allocate concurrently", async () => {
    const [a, b] = [await startReplica(), await startReplica()];
    await a.allocateSubnets({ networkId: "shared", withGateway: true, subnets: [{ cidr: "10.7.0.0/24", gateway: "", ipv6: false }] });
    const endpoints = Array.from({ length: 120 }, (_, i) => `ep${i}`);
    const results = await Promise.all(
      endpoints.map((endpointId, i) => (i % 2 === 0 ? a : b).allocateAddress(v4("shared", endpointId))),
    );
    const addresses = results.map((result) => result.address);
    expect(new Set(addresses).size).toBe(endpoints.length);
    expect(addresses).not.toContain("10.7.0.1/24");
    // A retry on the other replica answers the same address.
    expect((await b.allocateAddress(v4("shared", "ep0"))).address).toBe(addresses[0]);
    const listed = (await a.listAllocations("shared")).allocations.filter((x) => x.kind === AddressKind.ADDRESS_KIND_ENDPOINT);
    expect(listed).toHaveLength(endpoints.length);
  });

  it("lets concurrent retries of one endpoint end with one address", async () => {
    const [a, b] = [await startReplica(), await startReplica()];
    await a.allocateSubnets({ networkId: "n", withGateway: true, subnets: [{ cidr: "10.8.0.0/24", gateway: "", ipv6: false }] });
    const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 ? a : b).allocateAddress(v4("n", "same"))));
    expect(new Set(results.map((r) => r.address)).size).toBe(1);
    const listed = (await a.listAllocations("n")).allocations.filter((x) => x.kind === AddressKind.ADDRESS_KIND_ENDPOINT);
    expect(listed.map((x) => x.address)).toEqual([results[0]!.address]);
  });

  it("gives a released endpoint id a fresh allocation, even while its first one is remembered for deduplication", async () => {
    const [a, b] = [await startReplica(), await startReplica()];
    await a.allocateSubnets({ networkId: "again", withGateway: true, subnets: [{ cidr: "10.10.0.0/24", gateway: "", ipv6: false }] });
    const first = await a.allocateAddress(v4("again", "web"));
    await a.releaseAddresses("again", "web");
    await a.allocateAddress(v4("again", "other"));
    // JetStream still holds the first allocation's message id: the second one must not be taken for a retry of it.
    const results = await Promise.all([a.allocateAddress(v4("again", "web")), b.allocateAddress(v4("again", "web"))]);
    expect(results[0]).toEqual(results[1]);
    expect(results[0]!.address).not.toBe(first.address);
    const listed = (await b.listAllocations("again")).allocations.filter((x) => x.endpointId === "web");
    expect(listed.map((x) => x.address)).toEqual([results[0]!.address]);
  });

  it("answers the unary AllocateAddress and ReleaseAddresses as the call stream does", async () => {
    const ipam = await startReplica();
    await ipam.allocateSubnets({ networkId: "unary", withGateway: true, subnets: [{ cidr: "10.11.0.0/30", gateway: "", ipv6: false }] });
    const unary = new IpamClient(ipam.address, insecure(), clientOptions);
    try {
      const allocated = await callUnary(unary.allocateAddress.bind(unary), v4("unary", "a"));
      expect(allocated).toEqual({ address: "10.11.0.2/30", subnet: "10.11.0.0/30" });
      expect(await ipam.allocateAddress(v4("unary", "a"))).toEqual(allocated);
      const full = await refusal(callUnary(unary.allocateAddress.bind(unary), v4("unary", "b")));
      expect([full.code, full.details]).toEqual([status.RESOURCE_EXHAUSTED, "pool 10.11.0.0/30 is full"]);
      await callUnary(unary.releaseAddresses.bind(unary), { networkId: "unary", endpointId: "a" });
      expect((await ipam.allocateAddress(v4("unary", "b"))).address).toBe("10.11.0.2/30");
    } finally {
      unary.close();
    }
  });

  it("with a release cooldown, hands a released address out again only once it has cooled down, static requests excepted", async () => {
    const cooldownMs = 1000;
    const [a, b] = [await replicas.start(undefined, cooldownMs), await replicas.start(undefined, cooldownMs)];
    await a.allocateSubnets({ networkId: "cool", withGateway: true, subnets: [{ cidr: "10.12.0.0/29", gateway: "", ipv6: false }] });
    for (let i = 2; i <= 6; i++) expect((await a.allocateAddress(v4("cool", `e${i}`))).address).toBe(`10.12.0.${i}/29`);
    await a.releaseAddresses("cool", "e2");

    // Through the replica that released it, and through the other one, whose view may not know yet.
    for (const [replica, endpointId] of [[a, "late-a"], [b, "late-b"]] as const) {
      const full = await refusal(replica.allocateAddress(v4("cool", endpointId)));
      expect([full.code, full.details]).toEqual([status.RESOURCE_EXHAUSTED, "pool 10.12.0.0/29 is full (1 released address is in its 1 s release cooldown)"]);
    }
    expect((await b.allocateAddress(v4("cool", "static", "10.12.0.2"))).address).toBe("10.12.0.2/29");
    await b.releaseAddresses("cool", "static");
    const released = Date.now();
    expect((await refusal(a.allocateAddress(v4("cool", "late-a")))).code).toBe(status.RESOURCE_EXHAUSTED);

    await new Promise((resolve) => setTimeout(resolve, cooldownMs - (Date.now() - released) + 100));
    expect((await b.allocateAddress(v4("cool", "late-b"))).address).toBe("10.12.0.2/29");
  });
});
