import { execFileSync, spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { enableIpv6 } from "../../libs/netlink/index.js";

// enableIpv6 against the real kernel, in a namespace of the test's own made as Docker's libnetwork leaves a sandbox:
// net.ipv6.conf.all.disable_ipv6=1, which every link there (here the loopback) takes.
const NETNS = `trtest-v6on-${process.pid}`;
const inside = (...command: string[]) => spawnSync("ip", ["netns", "exec", NETNS, ...command], { encoding: "utf8" });
const disabled = (ifname: string) => inside("cat", `/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`).stdout.trim();

beforeAll(() => {
  execFileSync("ip", ["netns", "add", NETNS]);
  inside("sh", "-c", "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6");
});

afterAll(() => {
  spawnSync("ip", ["netns", "del", NETNS]);
});

describe("enableIpv6", () => {
  it("turns IPv6 on for the links named, in that namespace only, so that an IPv6 address can be added", () => {
    expect(disabled("lo")).toBe("1");
    expect(inside("ip", "-6", "addr", "add", "fd00:5::1/128", "dev", "lo").stderr).toMatch(/IPv6 is disabled on this device/);
    const ownBefore = execFileSync("cat", ["/proc/sys/net/ipv6/conf/lo/disable_ipv6"], { encoding: "utf8" });

    enableIpv6(`/run/netns/${NETNS}`, ["lo"]);

    expect(disabled("lo")).toBe("0");
    expect(disabled("all")).toBe("1");
    expect(inside("ip", "-6", "addr", "add", "fd00:5::1/128", "dev", "lo").status).toBe(0);
    expect(execFileSync("cat", ["/proc/sys/net/ipv6/conf/lo/disable_ipv6"], { encoding: "utf8" })).toBe(ownBefore);
  });

  it("says which link of which namespace failed", () => {
    expect(() => enableIpv6(`/run/netns/${NETNS}`, ["nosuch0"])).toThrow(`enable IPv6 on nosuch0 in /run/netns/${NETNS}`);
  });
});
