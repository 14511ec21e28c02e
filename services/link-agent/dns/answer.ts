import dnsPacket, { type Answer, type DecodedPacket, type Packet, type Question } from "dns-packet";
import type { NameAddresses } from "./name-table.js";

/** A UDP answer without EDNS fits 512 bytes (RFC 1035); with EDNS, what the client offers, up to this. */
const UDP_PLAIN_LIMIT = 512;
const UDP_EDNS_LIMIT = 4096;
const TCP_LIMIT = 65_535;
/** Names change as containers come and go: a resolver must ask again rather than keep an answer. */
const TTL_SECONDS = 0;

const RCODE = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4 } as const;
export type Rcode = keyof typeof RCODE;

export type Transport = "udp" | "tcp";

/**
 * What to do with one message from a container: answer it (the answer already sized for the transport),
 * forward it to the host's resolvers (a name that is not a container of the asker's networks), or drop
 * it (not a query, or too broken to carry an id to answer to).
 */
export type Decision = { kind: "answer"; answer: Buffer } | { kind: "forward"; query: DecodedPacket } | { kind: "drop" };

/** `lookup` finds a name among the containers of the asking container's own networks. */
export function decide(message: Buffer, transport: Transport, lookup: (name: string) => NameAddresses | undefined, canForward: boolean): Decision {
  let query: DecodedPacket;
  try {
    query = dnsPacket.decode(message);
  } catch {
    // Answer what carries a query's header at least, so the client stops waiting; ignore the rest.
    if (message.length < 12 || (message.readUInt16BE(2) & 0x8000) !== 0) return { kind: "drop" };
    return { kind: "answer", answer: encode({ type: "response", id: message.readUInt16BE(0), flags: RCODE.FORMERR }) };
  }
  if (query.type === "response") return { kind: "drop" };
  if (opcodeOf(message) !== OPCODE_QUERY) return { kind: "answer", answer: failure(query, "NOTIMP") };
  if (query.questions?.length !== 1) return { kind: "answer", answer: failure(query, "FORMERR") };
  const question = query.questions[0]!;
  const found = lookup(question.name);
  if (found) return { kind: "answer", answer: fitted(query, transport, localAnswers(question, found)) };
  return canForward ? { kind: "forward", query } : { kind: "answer", answer: failure(query, "SERVFAIL") };
}

const OPCODE_QUERY = 0;

/** The opcode, from the header's second 16-bit word (dns-packet's types leave it out). */
function opcodeOf(message: Buffer): number {
  return (message.readUInt16BE(2) >> 11) & 0xf;
}

/** A container's name answers A with its IPv4 addresses and AAAA with its IPv6 ones; other types get none. */
function localAnswers(question: Question, found: NameAddresses): Answer[] {
  const records = (type: "A" | "AAAA", addresses: string[]): Answer[] =>
    addresses.map((data) => ({ type, name: question.name, class: "IN", ttl: TTL_SECONDS, data }));
  switch (question.type) {
    case "A":
      return records("A", found.ipv4);
    case "AAAA":
      return records("AAAA", found.ipv6);
    case "ANY" as Question["type"]:
      return [...records("A", found.ipv4), ...records("AAAA", found.ipv6)];
    default:
      // The name exists, so NOERROR with no records (NODATA), never NXDOMAIN, which would deny the A too.
      return [];
  }
}

/** The largest answer the client takes over this transport. */
export function sizeLimit(query: DecodedPacket, transport: Transport): number {
  if (transport === "tcp") return TCP_LIMIT;
  const opt = query.additionals?.find((record) => record.type === "OPT");
  if (!opt || !("udpPayloadSize" in opt)) return UDP_PLAIN_LIMIT;
  return Math.max(UDP_PLAIN_LIMIT, Math.min(opt.udpPayloadSize, UDP_EDNS_LIMIT));
}

/** An answer that does not fit is sent without its records and with TC set: the client asks again over TCP. */
function fitted(query: DecodedPacket, transport: Transport, answers: Answer[]): Buffer {
  const full = encode(response(query, RCODE.NOERROR | dnsPacket.AUTHORITATIVE_ANSWER, answers));
  if (full.length <= sizeLimit(query, transport)) return full;
  return encode(response(query, RCODE.NOERROR | dnsPacket.AUTHORITATIVE_ANSWER | dnsPacket.TRUNCATED_RESPONSE, []));
}

/** An answer of `rcode` and no records to `query`: what the client gets when its name cannot be answered. */
export function failure(query: DecodedPacket, rcode: Rcode): Buffer {
  return encode(response(query, RCODE[rcode], []));
}

function response(query: DecodedPacket, flags: number, answers: Answer[]): Packet {
  const edns = query.additionals?.some((record) => record.type === "OPT");
  return {
    type: "response",
    id: query.id,
    // RD is echoed; RA: names beyond the containers' are resolved for the client (by the host's resolvers).
    flags: flags | (query.flags! & dnsPacket.RECURSION_DESIRED) | dnsPacket.RECURSION_AVAILABLE,
    questions: query.questions,
    answers,
    additionals: edns ? [{ type: "OPT", name: ".", udpPayloadSize: UDP_EDNS_LIMIT, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [],
  };
}

function encode(packet: Packet): Buffer {
  return dnsPacket.encode({ questions: [], answers: [], authorities: [], additionals: [], ...packet });
}
