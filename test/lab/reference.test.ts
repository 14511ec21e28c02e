import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/reference.sh", import.meta.url).pathname;
const PINGS_PASS = /2 packets transmitted, 2 received, 0% packet loss[\s\S]*exit 0/;
const PINGS_FAIL = /100% packet loss[\s\S]*exit 1/;

// One boot of the lab runs every example of the reference driver (lab/reference.sh); each test reads
// what one section printed.
describe("lab: the reference driver's examples, on two hosts", () => {
  const lab = bootLab(script, { hosts: 2 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  describe("modes and flags, as ip -d link shows them", () => {
    it("l2 bridge by default", () => {
      expect(section("link-a114")).toMatch(/ipvlan\s+mode l2 bridge/);
    });
    it("l3, l3s with private, l2 with vepa", () => {
      expect(section("link-c214a")).toMatch(/ipvlan\s+mode l3 bridge/);
      expect(section("link-l3s1")).toMatch(/ipvlan\s+mode l3s private/);
      expect(section("link-vepa1")).toMatch(/ipvlan\s+mode l2 vepa/);
    });
  });

  describe("L3 mode (ipnet210: two subnets, no parent)", () => {
    it("ignores the gateway, saying so", () => {
      expect(section("create-ipnet210")).toContain("Note: gateway 192.168.214.1 ignored: l3 mode routes by device (default dev eth0)");
      expect(section("create-ipnet210")).toContain("exit 0");
    });
    it("routes between the two subnets on the same parent", () => {
      expect(section("l3-ping-214-to-10")).toMatch(PINGS_PASS);
      expect(section("l3-ping-10-to-214")).toMatch(PINGS_PASS);
    });
    it("gives the container default dev eth0", () => {
      expect(section("l3-route")).toMatch(/^default dev eth0/m);
      expect(section("l3-route")).toMatch(/^192\.168\.214\.0\/24 dev eth0 proto kernel scope link src 192\.168\.214\.10/m);
    });
    it("resolves containers by name", () => {
      expect(section("l3-name")).toMatch(/PING c214a \(192\.168\.214\.10\)/);
      expect(section("l3-name")).toMatch(PINGS_PASS);
    });
    it("gives a network without parent (not internal) its default route", () => {
      expect(section("vepa-route")).toMatch(/^default via 10\.4\.0\.1 dev eth0/m);
    });
  });

  describe("L2 multi-subnet (ipvlan114) on VLAN 114", () => {
    it("containers of one subnet reach each other across hosts", () => {
      expect(section("l2-ping-same-subnet")).toMatch(PINGS_PASS);
    });
    it("the two subnets cannot reach each other without a router", () => {
      expect(section("l2-ping-other-subnet")).toMatch(PINGS_FAIL);
    });
    it("resolves a container on another host by name, through its host's DNS server", () => {
      expect(section("name-across-hosts")).toMatch(/PING a114 \(192\.168\.114\.10\)/);
      expect(section("name-across-hosts")).toMatch(PINGS_PASS);
      expect(section("resolv-conf-b114")).toMatch(/^nameserver 127\.0\.0\.11$/m);
      expect(section("resolv-conf-b114")).toMatch(/^options .*ndots:0/m);
      // No names in the hosts file: they come from the DNS server only.
      expect(section("hosts-b114")).not.toMatch(/a114|c116/);
    });
    it("answers a program that entered only the network namespace (nsenter, no hosts file), for a container on another host", () => {
      expect(section("nslookup-across-hosts")).toMatch(/^Name:\s+c116\nAddress: 192\.168\.116\.10$/m);
      expect(section("nslookup-across-hosts")).toContain("exit 0");
    });
    it("resolves a new container of another host within 1 s of its being ready, and forgets it within 1 s of its removal", () => {
      expect(section("nslookup-new-container")).toMatch(/^Name:\s+d114\nAddress: 192\.168\.114\.12$/m);
      expect(Number(/found by the lookup begun (\d+) ms after/.exec(section("nslookup-new-container"))?.[1])).toBeLessThan(1_000);
      expect(section("nslookup-removed-container")).toMatch(/^d114\nexit 0$/m);
      expect(Number(/gone by the lookup begun (\d+) ms after/.exec(section("nslookup-removed-container"))?.[1])).toBeLessThan(1_000);
    });
    it("fails a name no container has cleanly and quickly: NXDOMAIN, or SERVFAIL as the lab has no resolver to forward to", () => {
      expect(section("nslookup-unknown")).toMatch(/server can't find nosuchcontainer: (NXDOMAIN|SERVFAIL)/);
      expect(section("nslookup-unknown")).toContain("exit 1");
      expect(Number(/answered after (\d+) ms/.exec(section("nslookup-unknown"))?.[1])).toBeLessThan(3_000);
    });
  });

  describe("dual stack (ipvlan140)", () => {
    it("has IPv4 from the first subnet and the static IPv6, without DAD", () => {
      expect(section("addr-d140")).toMatch(/inet 192\.168\.140\.2\/24/);
      expect(section("addr-d140")).toMatch(/inet6 2001:db8:abc9::51\/64 scope global nodad/);
    });
    it("has a default route via each family's gateway", () => {
      expect(section("route-d140")).toMatch(/^default via 192\.168\.140\.1 dev eth0/m);
      expect(section("route-d140")).toMatch(/^default via 2001:db8:abc9::22 dev eth0/m);
    });
    it("reaches the container over IPv4 and IPv6 from the other host", () => {
      expect(section("dual-ping").match(/2 packets transmitted, 2 received, 0% packet loss/g)).toHaveLength(2);
      expect(section("dual-ping").match(/^exit \d+$/gm)).toEqual(["exit 0", "exit 0"]);
    });
  });

  describe("IPv6 only (v6ipvlan139)", () => {
    it("gets a default IPv4 subnet as well", () => {
      expect(section("addr-f139")).toMatch(/inet 172\.1[89]\.\d+\.\d+\/16/);
      expect(section("addr-f139")).toMatch(/inet6 2001:db8:abc2::1\/64 scope global nodad/);
    });
    it("two containers ping each other over IPv6 across hosts", () => {
      expect(section("v6-ping")).toMatch(PINGS_PASS);
    });
  });

  describe("isolation", () => {
    it("a container cannot reach its own host's parent address, but reaches another host", () => {
      expect(section("isolation-own-host")).toMatch(PINGS_FAIL);
      expect(section("isolation-other-host")).toMatch(PINGS_PASS);
    });
    it("different VLANs cannot reach each other", () => {
      expect(section("isolation-vlans")).toMatch(PINGS_FAIL);
    });
  });

  it("frees a static --ip6 the moment its container is removed (the reference's bug)", () => {
    expect(section("reuse-ip6")).toMatch(/^d140\nexit 0\nd140b\nexit 0\n/);
    expect(section("reuse-ip6")).toContain("2001:db8:abc9::51/64");
    expect(section("netns-etc-after-rm")).not.toMatch(/^d140@h1$/m);
    expect(section("netns-etc-after-rm")).toMatch(/^d140b@h1$/m);
  });

  it("--internal: no default route", () => {
    expect(section("internal-route")).toMatch(/^192\.168\.11\.0\/24 dev eth0/m);
    expect(section("internal-route")).not.toMatch(/default/);
  });

  it("no --subnet at all: the next default IPv4 subnet (isolated3)", () => {
    expect(section("create-isolated3")).toContain("exit 0");
    expect(section("addr-cid3")).toMatch(/inet 172\.(1[89]|2\d)\.0\.2\/16/);
  });

  describe("L3 dual stack, multi-subnet (ipnet110)", () => {
    it("gives each container the addresses asked for, the others from the first subnet of each family", () => {
      expect(section("addr-ipnet110")).toMatch(/^j110 192\.168\.110\.\d+\/24 2001:db8:abc6::\w+\/64 $/m);
      expect(section("addr-ipnet110")).toMatch(/^k110 192\.168\.110\.\d+\/24 2001:db8:abc6::10\/64 $/m);
      expect(section("addr-ipnet110")).toMatch(/^m110 192\.168\.112\.30\/24 2001:db8:abc6::\w+\/64 $/m);
      expect(section("addr-ipnet110")).toMatch(/^n110 192\.168\.112\.50\/24 2001:db8:abc6::50\/64 $/m);
    });
    it("default dev eth0 for IPv4 and IPv6", () => {
      expect(section("route-n110")).toMatch(/^default dev eth0/m);
      expect(section("route-n110")).toMatch(/^default dev eth0 .*metric 1024/m);
    });
    it("routes between the subnets, IPv4 and IPv6", () => {
      expect(section("l3-dual-ping").match(/2 packets transmitted, 2 received, 0% packet loss/g)).toHaveLength(2);
      expect(section("l3-dual-ping").match(/^exit \d+$/gm)).toEqual(["exit 0", "exit 0"]);
    });
  });

  it("a parent that exists on no host: refused at create, naming the hosts' interfaces, and no network is made", () => {
    expect(section("create-nosuchnet")).toMatch(/Error: parent interface nosuch0 exists on no live host: h1.* eth0,.*; create it there first, or choose an interface they have with -o parent=/);
    expect(section("create-nosuchnet")).toContain("exit 1");
    expect(section("ls-after-nosuch")).not.toContain("nosuchnet");
  });
});
