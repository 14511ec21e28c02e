import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/host-shim.sh", import.meta.url).pathname;
const PINGED = /1 packets transmitted, 1 received, 0% packet loss/;

/** A ping that got no answer (or had no route at all), and the command failed. */
function expectNoAnswer(output: string): void {
  expect(output).not.toMatch(PINGED);
  expect(output).toMatch(/exit [12]\s*$/);
}

// One boot, two hosts: a host reaches its own containers through its shim, in L2 and L3 mode, and not without one.
describe("lab: a host reaches its own containers through a host shim", () => {
  const lab = bootLab(script, { hosts: 2 });
  const section = (name: string) => lab.section(name);

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("gives h1 an l2 ipvlan of its own on the parent, with an address of the network and routes to its container", () => {
    const [a1] = /a1=(\S+)/.exec(lab.output)!.slice(1);
    const shim = section("shim-h1-l2");
    expect(shim).toMatch(/ipvlan +mode l2/);
    expect(shim).toContain("@eth0.30");
    expect(shim).toMatch(/^10\.30\.0\.\d+\/24$/m);
    expect(shim).toMatch(/^10\.30\.0\.0\/24 proto kernel scope link src 10\.30\.0\.\d+/m);
    expect(shim).toMatch(new RegExp(`^${a1!.replace(/\./g, "\\.")} proto 211 scope link`, "m"));
    // h2 has a container on shimnet2 too, so a shim of its own, with another address.
    expect(section("shim-h2-l2")).toMatch(/^10\.30\.0\.\d+\/24$/m);
    expect(section("shim-h2-l2").trim()).not.toBe(/^10\.30\.0\.\d+\/24$/m.exec(shim)![0]);
    // Only the network that asked for one has a shim.
    expect(section("links-h1-l2").trim()).toBe("1");
  });

  it("shows each host's shim address in trellis network inspect", () => {
    const [network] = JSON.parse(section("inspect-l2")) as { hostShim: boolean; hostShims: { host: string; addresses: string[] }[] }[];
    expect(network!.hostShim).toBe(true);
    expect(network!.hostShims.map((s) => s.host)).toEqual(["h1", "h2"]);
    expect(network!.hostShims[0]!.addresses).toEqual([/^10\.30\.0\.\d+\/24$/m.exec(section("shim-h1-l2"))![0]]);
  });

  it("in l2 mode, h1 and its container reach each other through the shim; without one, h1 cannot reach its container", () => {
    expect(section("ping-h1-a1")).toMatch(PINGED);
    expect(section("ping-a1-h1")).toMatch(PINGED);
    expectNoAnswer(section("ping-h1-p1"));
    // A route through the parent gets no answer either: the kernel's isolation, not a missing route.
    expect(section("ping-h1-p1-via-parent")).toMatch(/ 0 received,.* 100% packet loss[\s\S]*exit 1/);
  });

  it("in l3 mode too, over IPv4 and IPv6, and h1's shim address is announced to no one on its own", () => {
    const shim = section("shim-h1-l3");
    expect(shim).toMatch(/ipvlan +mode l3/);
    expect(shim).toMatch(/^10\.40\.\d+\.\d+\/16$/m);
    expect(shim).toMatch(/^10\.40\.\d+\.\d+ proto 211 scope link/m);
    expect(section("ping-h1-b1")).toMatch(PINGED);
    expect(section("ping-b1-h1")).toMatch(PINGED);
    expectNoAnswer(section("ping-h1-q1"));
    expect(section("ping-h1-q1-via-parent")).toMatch(/ 0 received,.* 100% packet loss[\s\S]*exit 1/);
    // Over IPv6 too: the shim has an address of each family, and a /128 to b1.
    const [b1v6] = /b1v6=(\S+)/.exec(lab.output)!.slice(1);
    expect(shim).toMatch(/^fd00:40::\S+\/64$/m);
    expect(shim).toContain(`${b1v6} `);
    expect(section("ping6-h1-b1")).toMatch(PINGED);
    expect(section("ping6-b1-h1")).toMatch(PINGED);
    // h2 learns h1's block of shimnet3 (which holds b1 and the shim), never a host route for the shim.
    expect(section("announced-h2")).toMatch(/^10\.40\.\d+\.\d+\/26 via 192\.168\.1\.11 /m);
    expect(section("announced-h2")).not.toMatch(/^10\.40\.\d+\.\d+ via /m);
  });

  it("keeps both shims, same ifindex and address, across an agent restart", () => {
    const before = /before: (.+)/.exec(section("restart"))![1];
    const after = /after: (.+)/.exec(section("restart"))![1];
    expect(before).toMatch(/^\d+ \d+ 10\.30\.\S+ 10\.40\.\S+$/);
    expect(after).toBe(before);
    expect(section("ping-h1-a1-after-restart")).toMatch(PINGED);
    expect(section("ping-h1-b3-after-restart")).toMatch(PINGED);
  });

  it("drops a removed container's route, and removes the shim on every host with its network", () => {
    const b3 = /b3=(\S+)/.exec(lab.output)![1]!;
    const b1 = /b1=(\S+)/.exec(lab.output)![1]!;
    expect(section("route-after-rm-b3")).toContain(`${b1} scope link`);
    expect(section("route-after-rm-b3")).not.toContain(`${b3} `);
    expect(section("rm-shimnet2")).toContain("exit 0");
    const after = section("after-rm-shimnet2").split(/exit \d+/);
    expect(after[0]).toMatch(/does not exist/);
    expect(section("after-rm-shimnet2")).toMatch(/^exit 1$/m);
    expect(section("after-rm-shimnet2").match(/exit 1/g)).toHaveLength(2);
    expect(section("after-rm-shimnet2")).toMatch(/exit 0\s*$/);
  });
});
