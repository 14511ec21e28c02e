import dnsPacket, { type DecodedPacket, type Packet, type Question } from "dns-packet";
import { describe, expect, it } from "vitest";
import { decide, type Transport } from "../../services/link-agent/dns/answer.js";
import type { NameAddresses } from "../../services/link-agent/dns/name-table.js";
import { containerResolvConf, parseResolverConfig } from "../../services/link-agent/dns/resolv-conf.js";

const names: Record<string, NameAddresses> = {
  web: { ipv4: ["192.168.1.2"], ipv6: ["2001:db8::2"] },
  db: { ipv4: ["192.168.1.3"], ipv6: [] },
  // 40 addresses: more than 512 bytes of answer.
  big: { ipv4: Array.from({ length: 40 }, (_, i) => `10.0.0.${i + 1}`), ipv6: [] },
};
const lookup = (name: string) => names[name.toLowerCase()];

function query(question: Question, extra: Partial<Packet> = {}): Buffer {
  return dnsPacket.encode({ type: "query", id: 4242, flags: dnsPacket.RECURSION_DESIRED, questions: [question], ...extra });
}

function answered(message: Buffer, transport: Transport = "udp", canForward = true): DecodedPacket & { rcode: string } {
  const decision = decide(message, transport, lookup, canForward);
  if (decision.kind !== "answer") throw new Error(`expected an answer, got ${decision.kind}`);
  return dnsPacket.decode(decision.answer) as DecodedPacket & { rcode: string };
}

const dataOf = (packet: DecodedPacket) => packet.answers!.map((answer) => ("data" in answer ? answer.data : undefined));

describe("the embedded DNS server's answers", () => {
  it("answers A with a container's IPv4 addresses, to the id and question asked", () => {
    const answer = answered(query({ type: "A", name: "web" }));
    expect(answer).toMatchObject({ id: 4242, type: "response", rcode: "NOERROR", flag_aa: true, flag_rd: true, flag_ra: true, flag_tc: false });
    expect(answer.questions).toEqual([{ type: "A", name: "web", class: "IN" }]);
    expect(answer.answers).toEqual([{ type: "A", name: "web", class: "IN", ttl: 0, flush: false, data: "192.168.1.2" }]);
  });

  it("answers AAAA with its IPv6 addresses", () => {
    expect(dataOf(answered(query({ type: "AAAA", name: "web" })))).toEqual(["2001:db8::2"]);
  });

  it("answers a name without IPv6 with no AAAA records and NOERROR, never NXDOMAIN", () => {
    const answer = answered(query({ type: "AAAA", name: "db" }));
    expect(answer.rcode).toBe("NOERROR");
    expect(answer.answers).toEqual([]);
    expect(answered(query({ type: "MX", name: "db" })).rcode).toBe("NOERROR");
  });

  it("ignores case, and keeps the case asked in its answer (0x20 randomisation)", () => {
    const answer = answered(query({ type: "A", name: "WeB." }));
    expect(answer.questions![0]!.name).toBe("WeB");
    expect(answer.answers![0]).toMatchObject({ name: "WeB", data: "192.168.1.2" });
  });

  it("forwards every name that is no container of the asker's networks", () => {
    for (const name of ["example.com", "web.example.com", "nosuch"]) {
      const decision = decide(query({ type: "A", name }), "udp", lookup, true);
      expect(decision.kind, name).toBe("forward");
      if (decision.kind === "forward") expect(decision.query.questions![0]!.name).toBe(name);
    }
  });

  it("answers SERVFAIL to a name it would forward when the host has no resolver", () => {
    const answer = answered(query({ type: "A", name: "example.com" }), "udp", false);
    expect(answer).toMatchObject({ id: 4242, rcode: "SERVFAIL" });
    expect(answer.questions![0]!.name).toBe("example.com");
  });

  it("truncates an answer beyond 512 bytes over UDP, with TC set and no records, so that the client asks over TCP", () => {
    const answer = answered(query({ type: "A", name: "big" }));
    expect(answer).toMatchObject({ rcode: "NOERROR", flag_tc: true });
    expect(answer.answers).toEqual([]);
    const overTcp = answered(query({ type: "A", name: "big" }), "tcp");
    expect(overTcp.flag_tc).toBe(false);
    expect(overTcp.answers).toHaveLength(40);
  });

  it("fits an answer into the UDP size the client offers with EDNS, and says its own", () => {
    const edns = { additionals: [{ type: "OPT" as const, name: ".", udpPayloadSize: 1232, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] };
    const answer = answered(query({ type: "A", name: "big" }, edns));
    expect(answer.flag_tc).toBe(false);
    expect(answer.answers).toHaveLength(40);
    expect(answer.additionals).toMatchObject([{ type: "OPT", udpPayloadSize: 4096 }]);
    const small = { additionals: [{ ...edns.additionals[0]!, udpPayloadSize: 256 }] };
    expect(answered(query({ type: "A", name: "big" }, small)).flag_tc).toBe(true);
  });

  it("answers FORMERR to a broken query that still has a header, and drops what has not", () => {
    const broken = Buffer.concat([query({ type: "A", name: "web" }).subarray(0, 12), Buffer.from([0x3f, 0x61])]);
    expect(answered(broken)).toMatchObject({ id: 4242, rcode: "FORMERR" });
    expect(decide(Buffer.from([1, 2, 3]), "udp", lookup, true).kind).toBe("drop");
  });

  it("answers FORMERR to several questions at once, NOTIMP to what is not a query, and never answers an answer", () => {
    const two = dnsPacket.encode({ type: "query", id: 7, questions: [{ type: "A", name: "web" }, { type: "A", name: "db" }] });
    expect(answered(two).rcode).toBe("FORMERR");
    const update = query({ type: "A", name: "web" });
    update.writeUInt16BE(update.readUInt16BE(2) | (5 << 11), 2);
    expect(answered(update).rcode).toBe("NOTIMP");
    const response = dnsPacket.encode({ type: "response", id: 7, questions: [{ type: "A", name: "web" }] });
    expect(decide(response, "udp", lookup, true).kind).toBe("drop");
  });
});

describe("resolv.conf: the host's, and the containers'", () => {
  it("reads the host's nameservers (at most three), search domains and options", () => {
    const host = parseResolverConfig(
      ["# comment", "nameserver 10.0.0.53", "nameserver fe80::1%eth0", "nameserver not-an-address", "domain old.example", "search a.example b.example", "options edns0 timeout:2", "nameserver 10.0.0.54", "nameserver 10.0.0.55"].join("\n"),
    );
    expect(host).toEqual({ nameservers: ["10.0.0.53", "fe80::1%eth0", "10.0.0.54"], search: ["a.example", "b.example"], options: ["edns0", "timeout:2"] });
  });

  it("points a container at 127.0.0.11 with the host's search domains and options, and ndots:0 unless the host sets ndots", () => {
    const host = parseResolverConfig("nameserver 10.0.0.53\nsearch a.example\noptions edns0\n");
    expect(containerResolvConf(host, "web")).toBe(
      "# Written by the Trellis agent for container web: its host's agent answers on 127.0.0.11.\nnameserver 127.0.0.11\nsearch a.example\noptions edns0 ndots:0\n",
    );
    expect(containerResolvConf(parseResolverConfig("options ndots:2"), "web")).toMatch(/\noptions ndots:2\n$/);
  });
});
