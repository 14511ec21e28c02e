import { describe, expect, it } from "vitest";
import { status } from "@grpc/grpc-js";
import { blockOf, blocksIn, boundsInBlock, resolveHostBlocks } from "../../services/ipam/blocks.js";
import { listBlocksAnswer } from "../../services/ipam/manager.js";
import { StatusError } from "../../libs/grpc/status-error.js";
import { blockKey } from "../../services/ipam/keys.js";
import { formatPrefix, parseAddress, parsePrefix } from "../../libs/ipmath/index.js";
import { AddressKind, type AddressRecord, type IpamNetwork } from "../../libs/proto/gen/trellis/v1/ipam.js";

const network = (cidr: string, hostBlocks = resolveHostBlocks({}), ipRange = ""): IpamNetwork => ({
  networkId: "n",
  incarnation: "i",
  subnets: [{ cidr, gateway: "", ipv6: cidr.includes(":"), pool: ipRange ? { ipRange, auxAddresses: {} } : undefined }],
  hostBlocks,
});

const endpoint = (address: string, host: string, endpointId: string): AddressRecord => ({
  networkId: "n",
  incarnation: "i",
  endpointId,
  host,
  address,
  subnet: "10.0.0.0/24",
  ipv6: false,
  kind: AddressKind.ADDRESS_KIND_ENDPOINT,
});

describe("per-host blocks", () => {
  it("defaults to /26 and /122 and refuses lengths beyond the family", () => {
    expect(resolveHostBlocks({})).toEqual({ ipv4PrefixLength: 26, ipv6PrefixLength: 122 });
    expect(resolveHostBlocks({ ipv4PrefixLength: 28 })).toEqual({ ipv4PrefixLength: 28, ipv6PrefixLength: 122 });
    let refusal: unknown;
    try {
      resolveHostBlocks({ ipv4PrefixLength: 33 });
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toBeInstanceOf(StatusError);
    expect((refusal as StatusError).code).toBe(status.INVALID_ARGUMENT);
    expect((refusal as StatusError).message).toBe("block prefix length for IPv4 must be between 1 and 32, received: 33");
  });

  it("cuts a subnet (or its ip range) into blocks, a small subnet being one block", () => {
    const n = network("10.0.0.0/24");
    expect([...blocksIn(n, parsePrefix("10.0.0.0/24"))].map(formatPrefix)).toEqual(["10.0.0.0/26", "10.0.0.64/26", "10.0.0.128/26", "10.0.0.192/26"]);
    expect([...blocksIn(n, parsePrefix("10.0.0.0/28"))].map(formatPrefix)).toEqual(["10.0.0.0/28"]);
    const ranged = network("10.0.0.0/24", resolveHostBlocks({}), "10.0.0.128/25");
    const subnet = ranged.subnets[0]!;
    expect(formatPrefix(blockOf(ranged, subnet, parsePrefix(subnet.cidr), parseAddress("10.0.0.200"))!)).toBe("10.0.0.192/26");
    expect(blockOf(ranged, subnet, parsePrefix(subnet.cidr), parseAddress("10.0.0.5"))).toBeUndefined();
    const v6 = network("fd00::/64");
    expect(formatPrefix(blockOf(v6, v6.subnets[0]!, parsePrefix("fd00::/64"), parseAddress("fd00::1:5"))!)).toBe("fd00::1:0/122");
  });

  it("keeps a block's usable part inside the pool's bounds", () => {
    expect(boundsInBlock({ first: 1n, last: 254n }, parsePrefix("0.0.0.0/26"))).toEqual({ first: 1n, last: 63n });
    expect(boundsInBlock({ first: 1n, last: 254n }, parsePrefix("0.0.0.192/26"))).toEqual({ first: 192n, last: 254n });
    expect(boundsInBlock({ first: 100n, last: 120n }, parsePrefix("0.0.0.192/26"))).toBeUndefined();
  });

  it("names each block by network, address and length in one key", () => {
    expect(blockKey("n.1", parsePrefix("10.0.0.64/26"))).toBe("block.n=2e1.10-0-0-64-26");
    expect(blockKey("n", parsePrefix("fd00::40/122"))).toBe("block.n.fd00--40-122");
  });

  it("lists as borrowed exactly the addresses outside their own host's blocks", () => {
    const blocks = [
      { networkId: "n", incarnation: "i", host: "a", cidr: "10.0.0.0/26", ipv6: false, borrowed: false },
      { networkId: "n", incarnation: "i", host: "b", cidr: "10.0.0.64/26", ipv6: false, borrowed: false },
      // The record of a's borrowed address lists it as borrowed, not as a block.
      { networkId: "n", incarnation: "i", host: "a", cidr: "10.0.0.70/32", ipv6: false, borrowed: true },
    ];
    const records = [endpoint("10.0.0.2/24", "a", "e1"), endpoint("10.0.0.70/24", "a", "e2"), endpoint("10.0.0.200/24", "b", "e3")];
    expect(listBlocksAnswer(blocks, records, "")).toEqual({
      blocks: [
        { cidr: "10.0.0.0/26", host: "a", ipv6: false },
        { cidr: "10.0.0.64/26", host: "b", ipv6: false },
      ],
      borrowed: [
        { address: "10.0.0.70", host: "a", endpointId: "e2", ipv6: false },
        { address: "10.0.0.200", host: "b", endpointId: "e3", ipv6: false },
      ],
    });
    expect(listBlocksAnswer(blocks, records, "b").blocks.map((block) => block.cidr)).toEqual(["10.0.0.64/26"]);
  });
});
