import { describe, expect, it } from "vitest";
import { bootLab } from "../support/lab.js";

const script = new URL("../../lab/tls.sh", import.meta.url).pathname;
const PINGED = /2 packets transmitted, 2 received, 0% packet loss/;

describe("lab with TLS: mutual TLS everywhere, each service with its own certificate, signed records", () => {
  const lab = bootLab(script, { hosts: 2, tls: true });
  const section = (name: string) => lab.section(name);

  it("runs to the end, with no warning from any process", () => {
    expect(lab.code, lab.output).toBe(0);
    expect(lab.output).not.toContain("Warning:");
  });

  it("an operator's certificate creates the network and its containers, which ping across hosts over signed route announcements", () => {
    for (const name of ["create-l3net", "run-c1", "run-c2"]) expect(section(name)).toContain("exit 0");
    expect(section("routes-h1")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.12 dev eth0/m);
    expect(section("ping-c1-c2")).toMatch(PINGED);
  });

  it("a client without a certificate is refused, with the message, and no network is made", () => {
    expect(section("no-certificate")).toContain("CreateNetwork on trellis.v1.Control needs a client certificate from the cluster's CA");
    expect(section("no-certificate")).toContain("exit 1");
    expect(section("networks-after")).toContain("l3net");
    expect(section("networks-after")).not.toContain("anon");
  });

  it("an announcement for h2 forged with h1's credentials is dropped, and h2's own comes back", () => {
    expect(section("forge")).toContain("forged: h2 announces 10.1.0.0/16 via 192.168.1.11");
    expect(section("forge-dropped").trim()).toBe("dropped the route announcement of host h2: it is not signed");
    expect(section("forge-routes-h1")).not.toContain("10.1.0.0/16");
    expect(section("routes-h1-after")).toMatch(/^10\.1\.\S+ via 192\.168\.1\.12 dev eth0/m);
  });
});
