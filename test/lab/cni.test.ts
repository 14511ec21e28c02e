import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runInLab, type LabResult } from "../support/lab.js";

const script = new URL("../../lab/cni.sh", import.meta.url).pathname;
const PINGS_PASS = /2 packets transmitted, 2 (packets )?received, 0% packet loss[\s\S]*exit 0/;

// Debian's podman, a real runtime, puts its containers on a Trellis L2 VLAN network through the trellis CNI
// plugin, one on each of two hosts (lab/cni.sh).
describe("lab: podman containers on a Trellis network, across hosts", () => {
  let lab: LabResult;
  const section = (name: string) => lab.section(name);

  beforeAll(async () => {
    lab = await runInLab(script, { hosts: 2 });
  });
  afterAll(() => rmSync(lab.outDir, { recursive: true, force: true }));

  it("runs to the end", () => {
    expect(lab.code, lab.output).toBe(0);
  });

  it("installs the plugins and a conflist naming the socket of the host's agent", () => {
    expect(section("install")).toContain("installed /tmp/cni/bin/trellis and /tmp/cni/bin/trellis-ipam, and /tmp/cni/h1/cni60.conflist for network cni60");
    expect(section("install")).toMatch(/"type": "trellis",\s+"network": "cni60",\s+"socket": "\/run\/trellis\/h1\.sock"/);
  });

  it("podman run gives each container an ipvlan eth0 on the network, a static --ip as asked", () => {
    expect(section("run")).toMatch(/^exit 0$/m);
    expect(section("run")).not.toMatch(/^exit [1-9]/m);
    expect(section("p1-addr")).toMatch(/inet 10\.60\.0\.\d+\/24/);
    expect(section("p1-link")).toMatch(/ipvlan\s+mode l2 bridge/);
    expect(section("p2-addr")).toContain("inet 10.60.0.50/24");
    expect(section("ps")).toMatch(/^p1\s+cni60\s+h1\s+10\.60\.0\.\d+/m);
    expect(section("ps")).toMatch(/^p2\s+cni60\s+h2\s+10\.60\.0\.50/m);
  });

  it("the two containers ping each other across hosts, and by name through the host's DNS server", () => {
    expect(section("ping-across")).toMatch(PINGS_PASS);
    expect(section("ping-back")).toMatch(PINGS_PASS);
    expect(section("ping-by-name")).toMatch(/PING p1 \(10\.60\.0\.\d+\)/);
    expect(section("ping-by-name")).toMatch(PINGS_PASS);
  });

  it("podman rm releases the container and its address, which the next --ip gets at once", () => {
    expect(section("rm")).toMatch(/^p2\nexit 0/m);
    expect(section("ps-after-rm")).toMatch(/^p1\s/m);
    expect(section("ps-after-rm")).not.toMatch(/^p2\s/m);
    expect(section("reuse-ip")).toMatch(/exit 0[\s\S]*inet 10\.60\.0\.50\/24/);
  });

  it("on an L3 network, a podman container on h1 reaches a trellis run container on h2 through the routes", () => {
    expect(section("l3")).not.toMatch(/^exit [1-9]/m);
    expect(section("l3-route")).toMatch(/^default dev eth0/m);
    expect(section("l3-ping")).toMatch(PINGS_PASS);
  });

  it("Debian's ipvlan plugin with trellis-ipam on two hosts: two addresses of the network, never one twice", () => {
    expect(section("ipvlan-ipam")).not.toMatch(/^exit [1-9]/m);
    const i1 = /^i1 (10\.62\.0\.\d+\/24)$/m.exec(section("ipvlan-ipam"))?.[1];
    const i2 = /^i2 (10\.62\.0\.\d+\/24)$/m.exec(section("ipvlan-ipam"))?.[1];
    expect(i1).toBeDefined();
    expect(i2).toBeDefined();
    expect(i1).not.toBe(i2);
    expect(section("ipvlan-ipam-ping")).toMatch(PINGS_PASS);
  });

  it("measures the plugin's start-up next to Node's own, and a podman run", () => {
    console.log(section("timing"));
    expect(section("timing")).toMatch(/^plugin VERSION: \d+ ms$/m);
    // The agent's local API is root's alone.
    expect(section("timing")).toMatch(/^srw------- 1 root root 0 .* \/run\/trellis\/h1\.sock$/m);
  });

  it("STATUS is ready on both hosts", () => {
    expect(section("status")).toContain("status h1 exit 0");
    expect(section("status")).toContain("status h2 exit 0");
  });
});
