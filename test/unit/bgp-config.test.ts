import { describe, expect, it } from "vitest";
import { birdConfig, peerProtocolName } from "../../services/link-agent/bgp/bird-config.js";
import { parseBgpOptions, parseBgpPeer } from "../../services/link-agent/bgp/options.js";

const ADDRESSES = ["192.168.1.12", "fd00:1::12"];

describe("--bgp-peer", () => {
  it("takes ADDRESS, IPv4 ADDRESS:AS and [IPv6]:AS; a peer without AS is in the host's own AS", () => {
    expect(parseBgpPeer("192.168.1.1", 64512)).toEqual({ address: "192.168.1.1", family: 4, as: 64512 });
    expect(parseBgpPeer("192.168.1.1:64500", 64512)).toEqual({ address: "192.168.1.1", family: 4, as: 64500 });
    expect(parseBgpPeer("[fd00:1::1]:4200000000", 64512)).toEqual({ address: "fd00:1::1", family: 6, as: 4_200_000_000 });
    expect(parseBgpPeer("[fd00:1::1]", 64512)).toEqual({ address: "fd00:1::1", family: 6, as: 64512 });
    // Bare IPv6 text is all address: in "fd00:1::1:6500" the last group may be either.
    expect(parseBgpPeer("fd00:1::1:6500", 64512)).toEqual({ address: "fd00:1::1:6500", family: 6, as: 64512 });
    expect(parseBgpPeer("FD00:1:0::1", 64512).address).toBe("fd00:1::1");
  });

  it("refuses what is no address or no AS, saying what would be right", () => {
    const shape = 'expected ADDRESS or ADDRESS:AS, e.g. 192.168.1.1:64500 or [fd00:1::1]:64500';
    expect(() => parseBgpPeer("tor1.example", 64512)).toThrow(`invalid --bgp-peer "tor1.example": ${shape}`);
    expect(() => parseBgpPeer("fd00:1::1:64500", 64512)).toThrow(`invalid --bgp-peer "fd00:1::1:64500": ${shape}`);
    expect(() => parseBgpPeer("[192.168.1.1]:64500", 64512)).toThrow(`invalid --bgp-peer "[192.168.1.1]:64500": ${shape}`);
    expect(() => parseBgpPeer("192.168.1.1:as64500", 64512)).toThrow(
      'invalid AS in --bgp-peer "192.168.1.1:as64500" "as64500": expected an AS number between 1-4294967294, e.g. 64512',
    );
    expect(() => parseBgpPeer("192.168.1.1:0", 64512)).toThrow("expected an AS number between 1-4294967294");
    expect(() => parseBgpPeer("[fd00::1]:4294967295", 64512)).toThrow("expected an AS number between 1-4294967294");
  });
});

describe("--bgp-as with --bgp-peer", () => {
  it("is off without either flag", () => {
    expect(parseBgpOptions(undefined, undefined, ADDRESSES)).toBeUndefined();
    expect(parseBgpOptions(undefined, [], ADDRESSES)).toBeUndefined();
  });

  it("takes both, and peers of both families when the host has an address of each", () => {
    expect(parseBgpOptions("64512", ["192.168.1.1:64500", "[fd00:1::1]:64500"], ADDRESSES)).toEqual({
      localAs: 64512,
      peers: [
        { address: "192.168.1.1", family: 4, as: 64500 },
        { address: "fd00:1::1", family: 6, as: 64500 },
      ],
    });
  });

  it("refuses one flag without the other, a bad AS, a peer twice and a family the host has no address of", () => {
    expect(() => parseBgpOptions(undefined, ["192.168.1.1"], ADDRESSES)).toThrow("--bgp-peer needs --bgp-as: give this host's AS, e.g. --bgp-as=64512");
    expect(() => parseBgpOptions("64512", undefined, ADDRESSES)).toThrow("--bgp-as needs at least one --bgp-peer, e.g. --bgp-peer=192.168.1.1:64500");
    expect(() => parseBgpOptions("AS64512", ["192.168.1.1"], ADDRESSES)).toThrow('invalid --bgp-as "AS64512": expected an AS number between 1-4294967294, e.g. 64512');
    expect(() => parseBgpOptions("64512", ["fd00:1::1", "[fd00:1:0::1]:64500"], ADDRESSES)).toThrow("--bgp-peer fd00:1::1 is given twice: give each peer once");
    expect(() => parseBgpOptions("64512", ["fd00:1::1"], ["192.168.1.12"])).toThrow(
      "--bgp-peer fd00:1::1 is IPv6 but the agent has no IPv6 --address: give --address=<this host's underlay IPv6 address>",
    );
  });
});

describe("the host's BIRD config", () => {
  const bgp = parseBgpOptions("64512", ["192.168.1.1:64500", "[fd00:1::1]:64500"], ADDRESSES)!;
  const config = (prefixes: string[]) => birdConfig({ host: "h2", bgp, addresses: ADDRESSES, prefixes, logFile: "/run/trellis/bird/h2/bird.log" });

  it("advertises each served prefix once, to the peers of its family, via the host's underlay address, and imports nothing", () => {
    expect(config(["10.1.0.64/26", "fd00:30::40/122", "10.1.0.7/32", "10.1.0.64/26"])).toBe(
      [
        "# Written by trellis agent --host=h2; rewritten whenever what the host serves changes. Do not edit.",
        "router id 192.168.1.12;",
        'log "/run/trellis/bird/h2/bird.log" { remote, warning, error, auth, fatal, bug };',
        "",
        "protocol device {}",
        "",
        "protocol static trellis_v4 {",
        "  ipv4;",
        "  route 10.1.0.64/26 blackhole;",
        "  route 10.1.0.7/32 blackhole;",
        "}",
        "protocol static trellis_v6 {",
        "  ipv6;",
        "  route fd00:30::40/122 blackhole;",
        "}",
        "",
        "protocol bgp peer_192_168_1_1 {",
        "  local 192.168.1.12 as 64512;",
        "  neighbor 192.168.1.1 as 64500;",
        "  graceful restart on;",
        "  ipv4 {",
        "    import none;",
        '    export where proto = "trellis_v4";',
        "    next hop self;",
        "  };",
        "}",
        "",
        "protocol bgp peer_fd00_1__1 {",
        "  local fd00:1::12 as 64512;",
        "  neighbor fd00:1::1 as 64500;",
        "  graceful restart on;",
        "  ipv6 {",
        "    import none;",
        '    export where proto = "trellis_v6";',
        "    next hop self;",
        "  };",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("differs only in static routes when what the host serves changes, so a reload keeps the sessions", () => {
    const withoutRoutes = (text: string) => text.split("\n").filter((line) => !line.startsWith("  route "));
    expect(withoutRoutes(config(["10.1.0.64/26", "fd00:30::40/122"]))).toEqual(withoutRoutes(config([])));
    expect(config([])).toContain("protocol static trellis_v4 {\n  ipv4;\n}");
    // Same input, same text: the speaker compares texts to decide whether BIRD must reload.
    expect(config(["10.1.0.7/32", "10.1.0.64/26"])).toBe(config(["10.1.0.64/26", "10.1.0.7/32"]));
  });

  it("names a protocol after its peer, as `birdc show protocols` lists it", () => {
    expect(peerProtocolName({ address: "fd00:1::1" })).toBe("peer_fd00_1__1");
  });
});
