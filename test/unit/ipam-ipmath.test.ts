import { describe, expect, it } from "vitest";
import {
  contains,
  firstUsable,
  formatAddress,
  formatPrefix,
  HostBitsError,
  isUsable,
  lastUsable,
  overlaps,
  parseAddress,
  parsePrefix,
  subnetAt,
} from "../../libs/ipmath/index.js";

describe("ipmath", () => {
  it("parses and formats both families canonically", () => {
    expect(formatAddress(parseAddress("10.1.0.5"))).toBe("10.1.0.5");
    expect(parseAddress("255.255.255.255").value).toBe(0xffffffffn);
    expect(formatAddress({ family: 4, value: 0xc0a80102n })).toBe("192.168.1.2");
    expect(formatAddress(parseAddress("2001:DB8:0:0::5"))).toBe("2001:db8::5");
    expect(formatPrefix(parsePrefix("2001:db8:abc2::/64"))).toBe("2001:db8:abc2::/64");
  });

  it("is strict about spellings", () => {
    expect(() => parseAddress("10.1")).toThrow("not an IP address");
    expect(() => parseAddress("0x0a.1.1.1")).toThrow("not an IP address");
    expect(() => parseAddress("010.1.1.1")).toThrow("not an IP address");
    expect(() => parseAddress("10.1.1.256")).toThrow("not an IP address");
    expect(() => parseAddress("fe80::1%eth0")).toThrow("not an IP address");
    expect(() => parseAddress("::ffff:10.1.0.1")).toThrow("IPv4-mapped");
  });

  it("refuses host bits with a suggestion", () => {
    expect(() => parsePrefix("10.1.1.5/24")).toThrow(HostBitsError);
    expect(() => parsePrefix("2001:db8::1/64")).toThrow("did you mean 2001:db8::/64?");
  });

  it("knows usable ranges, point-to-point prefixes included", () => {
    const v4 = parsePrefix("192.168.1.0/24");
    expect(formatAddress({ family: 4, value: firstUsable(v4) })).toBe("192.168.1.1");
    expect(formatAddress({ family: 4, value: lastUsable(v4) })).toBe("192.168.1.254");
    const v6 = parsePrefix("2001:db8::/64");
    expect(formatAddress({ family: 6, value: lastUsable(v6) })).toBe("2001:db8::ffff:ffff:ffff:ffff");
    expect(isUsable(parsePrefix("10.0.0.0/31"), parseAddress("10.0.0.0"))).toBe(true);
    expect(isUsable(v4, parseAddress("192.168.1.255"))).toBe(false);
  });

  it("tests containment, overlap across families, and cuts subnets", () => {
    expect(contains(parsePrefix("10.0.0.0/8"), parseAddress("10.9.9.9"))).toBe(true);
    expect(overlaps(parsePrefix("10.1.0.0/16"), parsePrefix("10.1.0.0/24"))).toBe(true);
    expect(overlaps(parsePrefix("10.1.0.0/24"), parsePrefix("10.1.1.0/24"))).toBe(false);
    expect(overlaps(parsePrefix("0.0.0.0/0"), parsePrefix("::/0"))).toBe(false);
    expect(formatPrefix(subnetAt(parsePrefix("192.168.0.0/16"), 20, 3n))).toBe("192.168.48.0/20");
  });
});
