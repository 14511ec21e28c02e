import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { afterEach, describe, expect, it } from "vitest";
import {
  createNamespace,
  deleteNamespace,
  namespaceExists,
  namespacePath,
  NetlinkError,
  openNetlink,
  TRELLIS_ROUTE_PROTOCOL,
  type NetlinkHandle,
} from "../../libs/netlink/index.js";

// Everything happens inside namespaces these tests create; the machine's own links and routes are never touched.
const namespaces: string[] = [];
const handles: NetlinkHandle[] = [];

async function freshNamespace(): Promise<string> {
  const name = `tnl-${randomBytes(4).toString("hex")}`;
  namespaces.push(name);
  await createNamespace(name);
  return name;
}

function ipIn(netns: string, ...args: string[]): string {
  return execFileSync("ip", ["-n", netns, ...args], { encoding: "utf8" });
}

async function open(netns: string): Promise<NetlinkHandle> {
  const handle = await openNetlink(netns);
  handles.push(handle);
  return handle;
}

/** A namespace holding an up veth pair v0/v1; returns the handle and v0's index. */
async function withVeth(): Promise<{ netns: string; nl: NetlinkHandle; v0: number; v1: number }> {
  const netns = await freshNamespace();
  ipIn(netns, "link", "add", "v0", "type", "veth", "peer", "name", "v1");
  const nl = await open(netns);
  const v0 = (await nl.getLink("v0"))!.index;
  const v1 = (await nl.getLink("v1"))!.index;
  await nl.setUp(v0);
  await nl.setUp(v1);
  return { netns, nl, v0, v1 };
}

async function expectNetlinkError(promise: Promise<unknown>, code: string, message: RegExp): Promise<NetlinkError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(NetlinkError);
  expect((error as NetlinkError).code).toBe(code);
  expect((error as NetlinkError).message).toMatch(message);
  return error as NetlinkError;
}

afterEach(async () => {
  for (const handle of handles.splice(0)) handle.close();
  for (const name of namespaces.splice(0)) if (namespaceExists(name)) await deleteNamespace(name);
});

describe("namespaces", () => {
  it("creates and deletes a namespace that `ip netns` sees", async () => {
    const name = await freshNamespace();
    expect(namespaceExists(name)).toBe(true);
    expect(namespacePath(name)).toBe(`/run/netns/${name}`);
    expect(execFileSync("ip", ["netns", "list"], { encoding: "utf8" })).toContain(name);
    await deleteNamespace(name);
    expect(namespaceExists(name)).toBe(false);
  });

  it("reports EEXIST for a duplicate and ENOENT for a missing namespace", async () => {
    const name = await freshNamespace();
    await expectNetlinkError(createNamespace(name), "EEXIST", new RegExp(`^failed to create network namespace ${name}: .*\\(EEXIST\\)$`));
    await expectNetlinkError(deleteNamespace("tnl-missing-ns"), "ENOENT", /^failed to delete network namespace tnl-missing-ns: .*\(ENOENT\)$/);
    await expectNetlinkError(openNetlink("tnl-missing-ns"), "ENOENT", /^failed to open network namespace tnl-missing-ns: .*\(ENOENT\)$/);
  });

  it("binds a handle to its namespace and leaves the process where it was", async () => {
    const hostNetns = execFileSync("readlink", ["/proc/self/ns/net"], { encoding: "utf8" });
    const netns = await freshNamespace();
    ipIn(netns, "link", "add", "only-here", "type", "veth", "peer", "name", "only-here-p");
    const nl = await open(netns);
    expect(nl.netns).toBe(netns);
    const names = (await nl.listLinks()).map((link) => link.name).sort();
    expect(names).toEqual(["lo", "only-here", "only-here-p"]);
    expect(execFileSync("readlink", [`/proc/${process.pid}/task/${process.pid}/ns/net`], { encoding: "utf8" })).toBe(hostNetns);
    // Also by absolute path, as for a container's /proc/<pid>/ns/net.
    const byPath = await open(namespacePath(netns));
    expect((await byPath.getLink("only-here"))?.name).toBe("only-here");
  });
});

describe("links", () => {
  it("lists links with kind, state, mtu, peer and alias", async () => {
    const { nl, v0, v1 } = await withVeth();
    await nl.setAlias(v0, "trellis:test");
    const link = await nl.getLink("v0");
    expect(link).toEqual({ index: v0, name: "v0", kind: "veth", up: true, mtu: 1500, parentIndex: v1, alias: "trellis:test", mac: expect.stringMatching(/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/) });
    const lo = (await nl.listLinks()).find((l) => l.name === "lo");
    expect(lo).toMatchObject({ up: false, mtu: 65536 });
    expect(lo?.kind).toBeUndefined();
    expect(await nl.getLink("nope")).toBeUndefined();
  });

  it("deletes a link and reports ENODEV for a missing one", async () => {
    const { nl, v0 } = await withVeth();
    await nl.deleteLink(v0);
    expect(await nl.getLink("v0")).toBeUndefined();
    expect(await nl.getLink("v1")).toBeUndefined(); // a veth dies with its peer
    await expectNetlinkError(nl.deleteLink(v0), "ENODEV", new RegExp(`^failed to delete link ${v0}: .*\\(ENODEV\\)$`));
    await expectNetlinkError(nl.setUp(9999), "ENODEV", /^failed to set link 9999 up: .*\(ENODEV\)$/);
  });

  it("says dummy, vlan and ipvlan are not supported by a kernel without them", async () => {
    const { nl, v0 } = await withVeth();
    const target = await freshNamespace();
    await expectNetlinkError(nl.createDummy("d0"), "EOPNOTSUPP", /^failed to create dummy link d0: link kind "dummy" is not supported by this kernel .*\(EOPNOTSUPP\)$/);
    await expectNetlinkError(nl.createVlan("v0.10", v0, 10), "EOPNOTSUPP", /^failed to create vlan link v0\.10 \(id 10\) on link \d+: link kind "vlan" is not supported by this kernel \(load its module: modprobe 8021q\) \(EOPNOTSUPP\)$/);
    await expectNetlinkError(nl.createIpvlan("eth0", v0, "l3", "private", target), "EOPNOTSUPP", new RegExp(`^failed to create ipvlan link eth0 in network namespace ${target} \\(l3 private\\) on link \\d+: link kind "ipvlan" is not supported by this kernel`));
    expect((await nl.listLinks()).map((link) => link.name).sort()).toEqual(["lo", "v0", "v1"]);
    expect((await (await open(target)).listLinks()).map((link) => link.name)).toEqual(["lo"]);
  });

  it("rejects bad input before asking the kernel", async () => {
    const { nl, v0 } = await withVeth();
    await expectNetlinkError(nl.createVlan("v0.5000", v0, 5000), "EINVAL", /vlan id must be between 1-4094, received: 5000 \(EINVAL\)$/);
    await expectNetlinkError(nl.createDummy("a-name-that-is-too-long"), "EINVAL", /invalid interface name/);
    await expectNetlinkError(nl.createIpvlan("i0", v0, "l4" as "l2", "bridge"), "EINVAL", /ipvlan mode must be one of l2, l3, l3s, received: l4/);
  });
});

describe("addresses", () => {
  it("adds, lists and deletes IPv4 and IPv6 (nodad) addresses", async () => {
    const { netns, nl, v0 } = await withVeth();
    await nl.addAddress(v0, "10.0.0.2/24");
    await nl.addAddress(v0, "2001:db8:0::2/64", { nodad: true });
    const listed = await nl.listAddresses(v0);
    expect(listed).toContainEqual({ linkIndex: v0, cidr: "10.0.0.2/24", family: 4 });
    expect(listed).toContainEqual({ linkIndex: v0, cidr: "2001:db8::2/64", family: 6 });
    // nodad: usable at once, never "tentative".
    const v6 = ipIn(netns, "-6", "addr", "show", "dev", "v0");
    expect(v6).toMatch(/2001:db8::2\/64 scope global nodad \n/);
    expect((await nl.listAddresses()).some((a) => a.cidr === "10.0.0.2/24")).toBe(true);

    await nl.deleteAddress(v0, "10.0.0.2/24");
    await nl.deleteAddress(v0, "2001:db8::2/64");
    expect((await nl.listAddresses(v0)).filter((a) => !a.cidr.startsWith("fe80:"))).toEqual([]);
  });

  it("reports EEXIST, ENODEV and EADDRNOTAVAIL", async () => {
    const { nl, v0 } = await withVeth();
    await nl.addAddress(v0, "10.0.0.2/24");
    await expectNetlinkError(nl.addAddress(v0, "10.0.0.2/24"), "EEXIST", new RegExp(`^failed to add address 10\\.0\\.0\\.2/24 to link ${v0}: .*\\(EEXIST\\)$`));
    await expectNetlinkError(nl.addAddress(9999, "10.0.0.3/24"), "ENODEV", /^failed to add address 10\.0\.0\.3\/24 to link 9999: link 9999 does not exist \(ENODEV\)$/);
    await expectNetlinkError(nl.deleteAddress(v0, "10.0.0.9/24"), "EADDRNOTAVAIL", /address 10\.0\.0\.9\/24 is not on link/);
    await expectNetlinkError(nl.addAddress(v0, "10.0.0.300/24"), "EINVAL", /invalid address "10\.0\.0\.300\/24"/);
  });
});

describe("routes", () => {
  it("adds device, gateway and default routes with the Trellis protocol", async () => {
    const { nl, v0 } = await withVeth();
    await nl.addAddress(v0, "10.0.0.2/24");
    await nl.addAddress(v0, "2001:db8::2/64", { nodad: true });
    await nl.addRoute({ dst: "10.1.0.0/16", linkIndex: v0 });
    await nl.addRoute({ dst: "10.2.0.0/16", gateway: "10.0.0.1" });
    await nl.addRoute({ dst: "default", linkIndex: v0 });
    await nl.addRoute({ dst: "default", gateway: "2001:db8::1", linkIndex: v0 });
    await nl.addRoute({ dst: "2001:db8:1::/48", linkIndex: v0, protocol: 4 });

    const v4 = await nl.listRoutes(4);
    expect(v4).toContainEqual({ family: 4, dst: "10.1.0.0/16", linkIndex: v0, protocol: TRELLIS_ROUTE_PROTOCOL, scope: 253, table: 254 });
    expect(v4).toContainEqual({ family: 4, dst: "10.2.0.0/16", gateway: "10.0.0.1", linkIndex: v0, protocol: TRELLIS_ROUTE_PROTOCOL, scope: 0, table: 254 });
    expect(v4).toContainEqual({ family: 4, dst: "default", linkIndex: v0, protocol: TRELLIS_ROUTE_PROTOCOL, scope: 253, table: 254 });
    // The connected route the kernel made for the address.
    expect(v4).toContainEqual(expect.objectContaining({ dst: "10.0.0.0/24", protocol: 2 }));
    expect(v4.every((r) => r.family === 4)).toBe(true);

    const v6 = await nl.listRoutes(6);
    expect(v6).toContainEqual(expect.objectContaining({ family: 6, dst: "default", gateway: "2001:db8::1", linkIndex: v0, protocol: TRELLIS_ROUTE_PROTOCOL }));
    expect(v6).toContainEqual(expect.objectContaining({ dst: "2001:db8:1::/48", protocol: 4 }));
    expect((await nl.listRoutes()).some((r) => r.family === 6)).toBe(true);
  });

  it("replaces a route and deletes only routes of its own protocol", async () => {
    const { nl, v0, v1 } = await withVeth();
    await nl.addAddress(v0, "10.0.0.2/24");
    await nl.replaceRoute({ dst: "10.5.0.0/16", gateway: "10.0.0.1" });
    await nl.replaceRoute({ dst: "10.5.0.0/16", gateway: "10.0.0.254" });
    const matching = (await nl.listRoutes(4)).filter((r) => r.dst === "10.5.0.0/16");
    expect(matching).toEqual([expect.objectContaining({ gateway: "10.0.0.254", protocol: TRELLIS_ROUTE_PROTOCOL })]);

    await nl.addRoute({ dst: "10.6.0.0/16", linkIndex: v1, protocol: 4 });
    // Default protocol is Trellis': a static route of someone else is not deleted…
    await expectNetlinkError(nl.deleteRoute({ dst: "10.6.0.0/16", linkIndex: v1 }), "ESRCH", /^failed to delete route 10\.6\.0\.0\/16 dev \d+: no such route with protocol 210 in the main table \(ESRCH\)$/);
    // …unless asked for by its protocol.
    await nl.deleteRoute({ dst: "10.6.0.0/16", linkIndex: v1, protocol: 4 });
    await nl.deleteRoute({ dst: "10.5.0.0/16" });
    expect((await nl.listRoutes(4)).filter((r) => r.dst.startsWith("10.5.") || r.dst.startsWith("10.6."))).toEqual([]);
  });

  it("reports EEXIST, ENODEV and bad input", async () => {
    const { nl, v0 } = await withVeth();
    await nl.addRoute({ dst: "10.1.0.0/16", linkIndex: v0 });
    await expectNetlinkError(nl.addRoute({ dst: "10.1.0.0/16", linkIndex: v0 }), "EEXIST", new RegExp(`^failed to add route 10\\.1\\.0\\.0/16 dev ${v0}: .*\\(EEXIST\\)$`));
    await expectNetlinkError(nl.addRoute({ dst: "10.3.0.0/16", linkIndex: 9999 }), "ENODEV", /^failed to add route 10\.3\.0\.0\/16 dev 9999: the route's link does not exist \(ENODEV\)$/);
    await expectNetlinkError(nl.addRoute({ dst: "10.3.0.0/16" }), "EINVAL", /a route needs a gateway, a link, or both/);
    await expectNetlinkError(nl.addRoute({ dst: "10.3.0.0/16", gateway: "2001:db8::1" }), "EINVAL", /not in the address family/);
  });
});
