import { randomInt } from "node:crypto";
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import ipaddr from "ipaddr.js";
import type { DecodedPacket } from "dns-packet";
import { failure, type Transport } from "./answer.js";

const DNS_PORT = 53;

/**
 * Asks the host's resolvers, in order, what the containers' table cannot answer. Each attempt has its own
 * socket (a fresh source port) and a fresh id, so an answer that does not come from the resolver asked,
 * to this very query, is not taken; the answer that is taken is relayed as it came, rcode included
 * (NXDOMAIN stays NXDOMAIN). The resolvers share `budgetMs`, each getting an even part of what is left
 * (a resolver that fails at once leaves its part to the next); when every one failed or stayed silent,
 * the client gets SERVFAIL: never a hang.
 */
export class Forwarder {
  constructor(
    private readonly nameservers: readonly string[],
    private readonly budgetMs: number,
  ) {}

  get canForward(): boolean {
    return this.nameservers.length > 0;
  }

  /** Resolves with the answer for the client (its own id), never rejects. */
  async forward(query: DecodedPacket, message: Buffer, transport: Transport): Promise<Buffer> {
    const deadline = Date.now() + this.budgetMs;
    for (const [i, server] of this.nameservers.entries()) {
      const id = randomInt(65_536);
      const asked = Buffer.from(message);
      asked.writeUInt16BE(id, 0);
      const attemptMs = Math.max(0, deadline - Date.now()) / (this.nameservers.length - i);
      const answer = await (transport === "udp" ? askOverUdp : askOverTcp)(server, asked, attemptMs).catch(() => undefined);
      if (answer && isAnswerTo(answer, id)) {
        answer.writeUInt16BE(query.id!, 0);
        return answer;
      }
    }
    return failure(query, "SERVFAIL");
  }
}

/** An answer (QR set) carrying the id that was sent. */
function isAnswerTo(answer: Buffer, id: number): boolean {
  return answer.length >= 12 && answer.readUInt16BE(0) === id && (answer.readUInt16BE(2) & 0x8000) !== 0;
}

function familyOf(server: string): "udp4" | "udp6" {
  return ipaddr.parse(server.replace(/%.*/, "")).kind() === "ipv6" ? "udp6" : "udp4";
}

type Done = (error: Error | undefined, answer?: Buffer) => void;

/** One attempt at one resolver: `start` sends, and settles with `done`, at most once; `close` then ends it. */
function attempt(server: string, timeoutMs: number, close: () => void, start: (done: Done) => void): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let finished = false;
    const done: Done = (error, answer) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      close();
      if (error) reject(error);
      else resolve(answer!);
    };
    const timer = setTimeout(() => done(new Error(`no answer from ${server} within ${timeoutMs} ms`)), timeoutMs);
    start(done);
  });
}

function askOverUdp(server: string, query: Buffer, timeoutMs: number): Promise<Buffer> {
  const socket = createSocket(familyOf(server));
  return attempt(server, timeoutMs, () => socket.close(), (done) => {
    socket.on("error", (error) => done(error));
    // Connected: the kernel passes on only datagrams from the resolver asked.
    // A resolver the host has no route to fails here at once (ENETUNREACH), and its part goes to the next.
    socket.connect(DNS_PORT, server, (error?: Error) => (error ? done(error) : socket.send(query, (failed) => failed && done(failed))));
    socket.on("message", (answer) => isAnswerTo(answer, query.readUInt16BE(0)) && done(undefined, answer));
  });
}

/** DNS over TCP: each message preceded by its length in two bytes. */
function askOverTcp(server: string, query: Buffer, timeoutMs: number): Promise<Buffer> {
  const socket = connect({ host: server, port: DNS_PORT });
  let received = Buffer.alloc(0);
  return attempt(server, timeoutMs, () => socket.destroy(), (done) => {
    socket.on("error", (error) => done(error));
    socket.on("connect", () => socket.write(Buffer.concat([lengthOf(query), query])));
    socket.on("data", (chunk) => {
      received = Buffer.concat([received, chunk]);
      if (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) done(undefined, received.subarray(2, 2 + received.readUInt16BE(0)));
    });
    socket.on("end", () => done(new Error(`${server} closed the connection before answering`)));
  });
}

export function lengthOf(message: Buffer): Buffer {
  const length = Buffer.alloc(2);
  length.writeUInt16BE(message.length);
  return length;
}
