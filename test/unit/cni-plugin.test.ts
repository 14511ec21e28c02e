import { describe, expect, it } from "vitest";
import { containerName, parseArgs, staticAddresses, type Invocation } from "../../services/cni/invocation.js";
import { formatResult } from "../../services/cni/versions.js";
import { validateRuntimeAttach } from "../../services/planner/validate.js";

const attachment = {
  iface: { name: "net1", mac: "aa:bb:cc:dd:ee:ff", sandbox: "/var/run/netns/cni-1" },
  ips: [
    { address: "10.1.0.5/24", gateway: "10.1.0.1" },
    { address: "fd00::5/64", gateway: "" },
  ],
  routes: [{ dst: "default", via: "10.1.0.1", ipv6: false }],
  nameservers: ["127.0.0.11"],
};

describe("CNI results", () => {
  it("1.x: no IP version, the interface's index, default routes as 0.0.0.0/0", () => {
    expect(formatResult("1.0.0", attachment)).toEqual({
      cniVersion: "1.0.0",
      interfaces: [attachment.iface],
      ips: [
        { address: "10.1.0.5/24", gateway: "10.1.0.1", interface: 0 },
        { address: "fd00::5/64", interface: 0 },
      ],
      routes: [{ dst: "0.0.0.0/0", gw: "10.1.0.1" }],
      dns: { nameservers: ["127.0.0.11"] },
    });
  });

  it("0.3.1 and 0.4.0 name each address's IP version", () => {
    const ips = (formatResult("0.3.1", attachment).ips as { version: string }[]).map((ip) => ip.version);
    expect(ips).toEqual(["4", "6"]);
  });

  it("in a chain, the earlier plugins' interfaces come first and the index counts them", () => {
    const prevResult = { interfaces: [{ name: "lo" }], ips: [{ address: "127.0.0.1/8", interface: 0 }], routes: [] };
    const result = formatResult("1.1.0", { ...attachment, prevResult });
    expect(result.interfaces).toEqual([{ name: "lo" }, attachment.iface]);
    expect((result.ips as { interface: number }[]).map((ip) => ip.interface)).toEqual([0, 1, 1]);
  });
});

describe("CNI_ARGS", () => {
  const invocation = (args: string, config: Record<string, unknown> = {}) => ({ containerId: "0123abcd", args: parseArgs(args), config }) as Invocation;

  it("names the container by pod and namespace, by the pod alone when both are one (podman), else by the container id", () => {
    expect(containerName(invocation("K8S_POD_NAME=web;K8S_POD_NAMESPACE=shop"))).toBe("web.shop");
    expect(containerName(invocation("IgnoreUnknown=1;K8S_POD_NAME=web;K8S_POD_NAMESPACE=web"))).toBe("web");
    expect(containerName(invocation(""))).toBe("0123abcd");
  });

  it("takes static addresses from IP= first, else runtimeConfig.ips, one per family", () => {
    expect(staticAddresses(invocation("IP=10.1.0.9,fd00::9"))).toEqual({ ipv4: "10.1.0.9", ipv6: "fd00::9" });
    expect(staticAddresses(invocation("", { runtimeConfig: { ips: ["10.1.0.7/24"] } }))).toEqual({ ipv4: "10.1.0.7", ipv6: "" });
    expect(() => staticAddresses(invocation("IP=10.1.0.9,10.1.0.10"))).toThrow("give at most one IPv4 and one IPv6 address");
  });

  it("refuses a pair without '='", () => {
    expect(() => parseArgs("IP")).toThrow(`invalid CNI_ARGS "IP": "IP" is not KEY=VALUE`);
  });
});

describe("attaching into a runtime's namespace", () => {
  it("takes an absolute path and a name the kernel takes", () => {
    expect(() => validateRuntimeAttach({ netnsPath: "/var/run/netns/cni-1", ifname: "net1" })).not.toThrow();
    expect(() => validateRuntimeAttach({ netnsPath: "/proc/42/ns/net" })).not.toThrow();
    expect(() => validateRuntimeAttach({})).not.toThrow();
  });

  it.each([
    [{ netnsPath: "cni-1" }, `invalid netns_path "cni-1": give the absolute path of the container runtime's network namespace (CNI_NETNS)`],
    [{ netnsPath: "/var/run/../netns/x" }, `invalid netns_path "/var/run/../netns/x"`],
    [{ ifname: "net1" }, `invalid attach: ifname "net1" needs netns_path`],
    [{ netnsPath: "/run/netns/x", ifname: "eth0:1" }, `invalid ifname "eth0:1": use 1-15 characters`],
    [{ netnsPath: "/run/netns/x", ifname: "sixteen-chars-xx" }, `invalid ifname "sixteen-chars-xx"`],
  ])("refuses %j", (spec, message) => {
    expect(() => validateRuntimeAttach(spec)).toThrow(message);
  });
});
