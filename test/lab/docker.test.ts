import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runInLab, type LabResult } from "../support/lab.js";

const script = new URL("../../lab/docker.sh", import.meta.url).pathname;
const PINGS_PASS = /2 packets transmitted, 2 (packets )?received, 0% packet loss[\s\S]*exit 0/;
const NO_FAILURE = /^exit [1-9]/m;

// Debian's dockerd puts its containers on Trellis networks through `trellis docker-plugin`, one dockerd on each
// of two hosts (lab/docker.sh). Two dockerds and a score of `docker run`s under emulation: the run may take the
// lab's whole 20 minutes on a loaded machine, more than the lab project's hook timeout.
describe("lab: Docker containers on Trellis networks, across hosts", () => {
  let lab: LabResult;
  const section = (name: string) => lab.section(name);

  beforeAll(async () => {
    lab = await runInLab(script, { hosts: 2 });
  }, 1_260_000);
  afterAll(() => lab && rmSync(lab.outDir, { recursive: true, force: true }));

  it("runs to the end, with Debian's dockerd on both hosts, each seeing its own host's plugin", () => {
    expect(lab.code, lab.output).toBe(0);
    expect(section("start")).toMatch(/^h1: dockerd 20\.10\.\S+\nh2: dockerd 20\.10\./m);
    expect(section("plugin-ls")).toMatch(/^\/run\/docker\/plugins:\n\n\/tmp\/dk\/h1\/plugins:\ntrellis\.sock$/m);
  });

  it("docker network create -d trellis on two hosts makes one Trellis network", () => {
    expect(section("create")).toMatch(/^exit 0\n[0-9a-f]{64}\nexit 0$/m);
    expect(section("trellis-ls").match(/ipvlan20/g)).toHaveLength(1);
    expect(section("trellis-ls")).toMatch(/ipvlan20\s+ipvlan\s+l2\/bridge\s+eth0\.20\s+192\.168\.20\.0\/24/);
  });

  it("refuses another subnet for the same name, saying what the network is, and Docker's own IPAM", () => {
    expect(section("create-mismatch")).toContain(
      "Error response from daemon: remote: Trellis network ipvlan20 already exists with subnets 192.168.20.0/24, not 192.168.21.0/24; gateway 192.168.20.1, not 192.168.21.1: to join it, give the same options (--subnet=192.168.20.0/24 --gateway=192.168.20.1 -o parent=eth0.20 -o ipvlan_mode=l2 -o ipvlan_flag=bridge)",
    );
    expect(section("create-mismatch")).toMatch(/exit 1$/m);
    expect(section("create-no-ipam")).toMatch(/comes from address space "LocalDefault": add --ipam-driver=trellis/);
  });

  it("docker run gives each container an eth0 of the network, --ip as asked, routes from Trellis", () => {
    console.log(section("run").split("\n").filter((line) => /^(took|eth0 after) /.test(line)).join("\n"));
    expect(section("run")).not.toMatch(NO_FAILURE);
    expect(section("c1-addr")).toMatch(/inet 192\.168\.20\.\d+\/24/);
    expect(section("c2-addr")).toContain("inet 192.168.20.50/24");
    expect(section("c1-route")).toMatch(/^default via 192\.168\.20\.1 dev eth0/m);
    // Named as in Docker: the plugin asks dockerd once the container starts.
    expect(section("ps")).toMatch(/^c1\s+ipvlan20\s+h1\s+192\.168\.20\.\d+\/24/m);
    expect(section("ps")).toMatch(/^c2\s+ipvlan20\s+h2\s+192\.168\.20\.50\/24/m);
    expect(section("requests")).toMatch(/"SandboxKey":"\/tmp\/dk\/h1\/exec\/netns\/[0-9a-f]{12}"/);
  });

  it("a Docker container on h1 pings one on h2, and back", () => {
    expect(section("ping-across")).toMatch(PINGS_PASS);
    expect(section("ping-back")).toMatch(PINGS_PASS);
  });

  it("Docker's embedded DNS answers the names of this host's containers", () => {
    expect(section("dns")).toContain("nameserver 127.0.0.11");
    expect(section("dns")).toMatch(/Name:\s+c1\nAddress: 192\.168\.20\.\d+/);
  });

  it("a Docker container resolves another host's by its Docker name, through the agent's --host-dns; no such name is NXDOMAIN at once", () => {
    expect(section("dns-across")).toMatch(/Name:\s+c2\nAddress: 192\.168\.20\.50\n[\s\S]*exit 0/);
    const c1 = /inet (192\.168\.20\.\d+)\/24/.exec(section("c1-addr"))?.[1];
    expect(c1).toBeDefined();
    expect(section("dns-back")).toMatch(new RegExp(`Name:\\s+c1\\nAddress: ${c1!.replace(/\./g, "\\.")}\\n[\\s\\S]*exit 0`));
    expect(section("dns-unknown")).toMatch(/NXDOMAIN/);
    expect(section("dns-unknown")).toMatch(/^exit [1-9]\d*\ntook [0-9] s$/m);
  });

  it("docker rm releases the address: --ip gets it again at once, every time", () => {
    expect(section("rm")).toMatch(/^c2\nexit 0/m);
    expect(section("ps-after-rm")).not.toMatch(/\sh2\s/);
    expect(section("reuse-ip")).not.toMatch(NO_FAILURE);
    for (const round of [1, 2]) expect(section("reuse-ip")).toContain(`r${round} 192.168.20.50/24`);
  });

  it("a dockerd restart keeps the network; the containers it stopped leave nothing behind, and new ones work", () => {
    expect(section("restart")).toMatch(/^ipvlan20 trellis$/m);
    expect(section("restart")).not.toMatch(NO_FAILURE);
    expect(section("ps-after-restart").match(/\sh1\s/g)).toHaveLength(1);
    expect(section("ping-after-restart")).toMatch(PINGS_PASS);
  });

  it("a plugin restart changes nothing", () => {
    expect(section("plugin-restart")).toMatch(PINGS_PASS);
    expect(section("plugin-restart")).not.toMatch(NO_FAILURE);
  });

  it("an agent restart changes nothing: the same containers, the ping still passes", () => {
    expect(section("agent-restart")).toContain("ps unchanged");
    expect(section("agent-restart")).toMatch(PINGS_PASS);
  });

  it("db_net on the hosts' own eth0 (the reference's example): the other host's container and the other host answer, its own host never", () => {
    expect(section("db_net")).not.toMatch(NO_FAILURE);
    expect(section("db_net-ping")).toMatch(PINGS_PASS);
    expect(section("db_net-other-host")).toMatch(PINGS_PASS);
    expect(section("db_net-own-host")).toMatch(/100% packet loss[\s\S]*exit 1/);
    expect(section("db_net-rm")).not.toMatch(NO_FAILURE);
    expect(section("db_net-rm")).toMatch(/^0$/m);
  });

  it("on an L3 network (ipnet210), a container on h1 reaches one on h2 through Trellis's routes", () => {
    expect(section("l3")).not.toMatch(NO_FAILURE);
    expect(section("l3-route")).toMatch(/^default dev eth0/m);
    expect(section("l3-ping")).toMatch(PINGS_PASS);
  });

  it("dual-stack ipvlan114: --ip6 after docker rm gets its address at once, and IPv6 pings across hosts", () => {
    expect(section("v6"), section("v6-sandbox") + section("plugin-errors")).not.toMatch(NO_FAILURE);
    for (const round of [1, 2]) expect(section("v6"), section("v6-sandbox")).toContain(`w${round} fd00:114::50/64`);
    // Docker turned IPv6 off in its sandbox (all); the agent turned it on for its link, and Docker's lo.
    expect(section("v6-sandbox")).toMatch(/^all disable_ipv6=1\neth0 disable_ipv6=0\nlo disable_ipv6=0$/m);
    expect(section("v6-ping")).toMatch(PINGS_PASS);
  });

  it("Docker's own ipvlan driver with --ipam-driver=trellis: two hosts, two addresses, never one twice", () => {
    expect(section("ipvlan-ipam")).not.toMatch(NO_FAILURE);
    const i1 = /^i1 (192\.168\.30\.\d+\/24)$/m.exec(section("ipvlan-ipam"))?.[1];
    const i2 = /^i2 (192\.168\.30\.\d+\/24)$/m.exec(section("ipvlan-ipam"))?.[1];
    expect(i1).toBeDefined();
    expect(i2).toBeDefined();
    expect(i1).not.toBe(i2);
    expect(section("ipvlan-ipam-ping")).toMatch(PINGS_PASS);
  });

  it("docker rm -f and docker network rm on both hosts leave nothing behind", () => {
    expect(section("network-rm")).not.toMatch(NO_FAILURE);
    expect(section("network-rm")).toMatch(/^NETWORK ID\s+NAME\s+DRIVER\s+MODE\s+PARENT\s+SUBNETS\n?$/m);
    expect(section("leftovers")).toMatch(/^CONTAINER\s+NETWORK\s+HOST\s+ADDRESSES\naddress records: 0\nendpoint records: 0$/m);
  });
});
