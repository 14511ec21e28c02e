import { constants } from "node:os";
import { AttrStream, Flags, FlagsGet, MessageType, RawNetlinkSocket, rt, type ErrnoException } from "./package.js";
import { netlinkError, type NetlinkError } from "./errors.js";
import { afOf } from "./ip.js";
import { decodeRouteBytes, describeChange, encodeChangeRequest, NLMSG_HEADER_LENGTH, ROUTE_HINTS, RTM_GETROUTE, type RouteChange } from "./routes.js";
import { TRELLIS_ROUTE_PROTOCOL, type IpFamily, type Route } from "./types.js";

// The route half of rtnetlink spoken directly on a raw socket. The `netlink` package sends one request per
// datagram and parses replies generically: about 2,000 route changes/s, and a lost acknowledgement (receive
// buffer overrun) crashed it. Here many requests share one datagram, and only failures and each datagram's
// last request are acknowledged, so the kernel, not the round trips, sets the pace.

const NETLINK_ROUTE = 0;
/** Requests per datagram: ~60 bytes each, well under the socket's send buffer. */
const CHANGES_PER_WRITE = 256;
/** Datagrams awaiting their acknowledgement: bounds the error replies queued for us even if every request fails. */
const WRITES_IN_FLIGHT = 4;
/** Room for WRITES_IN_FLIGHT × CHANGES_PER_WRITE error replies (each ~1 KiB of skb) and large dumps. */
const RECEIVE_BUFFER_BYTES = 4 << 20;
/** An interrupted dump (the table changed meanwhile) may miss routes: read again, this many times at most. */
const DUMP_ATTEMPTS = 5;

const errnoNames = new Map(Object.entries(constants.errno).map(([name, errno]) => [errno, name]));

export interface RouteChangeFailure {
  change: RouteChange;
  error: NetlinkError;
}

interface EncodedChange {
  change: RouteChange;
  request: Buffer;
}

/** One datagram of changes: requests with sequence numbers first..first+changes.length-1. */
interface Write {
  first: number;
  changes: RouteChange[];
  failures: RouteChangeFailure[];
  done: (error?: Error) => void;
}

interface Dump {
  seq: number;
  routes: Route[];
  interrupted: boolean;
  done: (error?: Error) => void;
}

export class RouteSocket {
  private seq = 1;
  private readonly writes: Write[] = [];
  private dump: Dump | undefined;
  /** The kernel runs one dump per socket at a time (EBUSY otherwise): later ones wait for this one. */
  private dumps: Promise<unknown> = Promise.resolve();

  private constructor(private readonly raw: RawNetlinkSocket) {
    raw.on("message", (datagram) => this.receive(datagram));
    // Without a listener an error event (ENOBUFS: replies were dropped) throws and ends the process.
    raw.on("error", (error) => this.abandon(error));
    raw.unref();
  }

  /** Opens the socket in the calling thread's network namespace. */
  static open(): RouteSocket {
    const raw = new RawNetlinkSocket(NETLINK_ROUTE);
    try {
      raw.setRecvBufferSize(RECEIVE_BUFFER_BYTES);
    } catch (error) {
      raw.close();
      throw error;
    }
    return new RouteSocket(raw);
  }

  /** Unicast routes of the main table, of one family or both. */
  listRoutes(family?: IpFamily): Promise<Route[]> {
    const listed = this.dumps.then(async () => {
      for (let attempt = 1; ; attempt++) {
        const dump = await this.readDump(family);
        if (!dump.interrupted || attempt === DUMP_ATTEMPTS) return dump.routes;
      }
    });
    this.dumps = listed.catch(() => undefined);
    return listed;
  }

  /**
   * Applies `changes` in order and returns the ones the kernel refused; the others are in effect when it
   * resolves. Rejects only when the socket itself fails (then any of them may or may not have been applied).
   */
  async changeRoutes(changes: RouteChange[]): Promise<RouteChangeFailure[]> {
    const failures: RouteChangeFailure[] = [];
    const encoded: EncodedChange[] = [];
    for (const change of changes) {
      // A change the kernel could not even be asked for fails alone, like one the kernel refuses.
      try {
        encoded.push({ change, request: encodeChangeRequest(change) });
      } catch (error) {
        failures.push({ change, error: error as NetlinkError });
      }
    }
    const inFlight = new Set<Promise<void>>();
    for (let i = 0; i < encoded.length; i += CHANGES_PER_WRITE) {
      if (inFlight.size >= WRITES_IN_FLIGHT) await Promise.race(inFlight);
      const sent = this.send(encoded.slice(i, i + CHANGES_PER_WRITE), failures);
      inFlight.add(sent);
      void sent.finally(() => inFlight.delete(sent)).catch(() => undefined);
    }
    await Promise.all(inFlight);
    return failures;
  }

  close(): void {
    // Settle what is outstanding first: a closed native socket throws on every further call.
    this.abandon(Object.assign(new Error("socket closed"), { code: "EBADF" }));
    this.raw.close();
  }

  private send(batch: EncodedChange[], failures: RouteChangeFailure[]): Promise<void> {
    const first = this.nextSeqs(batch.length);
    batch.forEach(({ request }, i) => {
      request.writeUInt32LE(first + i, 8);
      // Only the last request asks for an acknowledgement: the kernel answers a failed request anyway,
      // so the last acknowledgement says every request of the datagram was handled.
      if (i === batch.length - 1) request.writeUInt16LE(request.readUInt16LE(6) | Flags.ACK, 6);
    });
    // One sendmsg with one iovec per request: a single datagram, without copying the requests together.
    const datagram = batch.map(({ request }) => request);
    return new Promise<void>((resolve, reject) => {
      const write: Write = {
        first,
        changes: batch.map(({ change }) => change),
        failures,
        done: (error) => (error ? reject(error) : resolve()),
      };
      this.writes.push(write);
      this.raw.ref();
      this.raw.send(datagram, {}, (error) => error && this.finish(write, netlinkError("send route changes", error)));
    });
  }

  private readDump(family: IpFamily | undefined): Promise<Dump> {
    const stream = new AttrStream();
    rt.formatRouteMessage({ kind: "route", data: family === undefined ? {} : { family: afOf(family) }, attrs: {} }, stream);
    const payload = Buffer.concat(stream.bufs);
    const seq = this.nextSeqs(1);
    return new Promise<Dump>((resolve, reject) => {
      const dump: Dump = { seq, routes: [], interrupted: false, done: (error) => (error ? reject(error) : resolve(dump)) };
      this.dump = dump;
      this.raw.ref();
      const request = Buffer.allocUnsafe(NLMSG_HEADER_LENGTH + payload.length);
      payload.copy(request, writeHeader(request, 0, request.length, RTM_GETROUTE, Flags.REQUEST | FlagsGet.DUMP, seq));
      this.raw.send(request, {}, (error) => {
        if (error) this.endDump(netlinkError("list routes", error));
      });
    });
  }

  private nextSeqs(count: number): number {
    // Sequence numbers wrap at 2^32; start again low rather than straddle the wrap within one datagram.
    if (this.seq + count > 0xffffffff) this.seq = 1;
    const first = this.seq;
    this.seq += count;
    return first;
  }

  // Netlink headers are in host byte order; Trellis runs on little-endian hosts (x86-64, arm64).
  private receive(datagram: Buffer): void {
    for (let offset = 0; offset + NLMSG_HEADER_LENGTH <= datagram.length; ) {
      const length = datagram.readUInt32LE(offset);
      if (length < NLMSG_HEADER_LENGTH) return;
      const type = datagram.readUInt16LE(offset + 4);
      const flags = datagram.readUInt16LE(offset + 6);
      const seq = datagram.readUInt32LE(offset + 8);
      const body = datagram.subarray(offset + NLMSG_HEADER_LENGTH, offset + length);
      if (this.dump?.seq === seq) this.onDumpMessage(type, flags, body);
      else if (type === MessageType.ERROR) this.onReply(seq, body.readInt32LE(0));
      offset += (length + 3) & ~3;
    }
  }

  private onDumpMessage(type: number, flags: number, body: Buffer): void {
    const dump = this.dump!;
    if (flags & Flags.DUMP_INTR) dump.interrupted = true;
    if (type === MessageType.DONE) {
      this.endDump();
    } else if (type === MessageType.ERROR) {
      this.endDump(netlinkError("list routes", errnoError(body.readInt32LE(0))));
    } else {
      const route = decodeRouteBytes(body);
      if (route) dump.routes.push(route);
    }
  }

  /** An acknowledgement (errno 0) or a failure of request `seq`. */
  private onReply(seq: number, errno: number): void {
    const write = this.writes.find((w) => seq >= w.first && seq < w.first + w.changes.length);
    if (!write) return;
    const index = seq - write.first;
    if (errno !== 0) {
      const change = write.changes[index];
      const cause = errnoError(errno);
      const hints = change.action === "delete" ? { ...ROUTE_HINTS, ESRCH: `no such route with protocol ${change.route.protocol ?? TRELLIS_ROUTE_PROTOCOL} in the main table` } : ROUTE_HINTS;
      write.failures.push({ change, error: netlinkError(describeChange(change), cause, hints[cause.code]) });
    }
    if (index === write.changes.length - 1) this.finish(write);
  }

  private finish(write: Write, error?: Error): void {
    const at = this.writes.indexOf(write);
    if (at < 0) return;
    this.writes.splice(at, 1);
    this.release();
    write.done(error);
  }

  private endDump(error?: Error): void {
    const dump = this.dump;
    if (!dump) return;
    this.dump = undefined;
    this.release();
    dump.done(error);
  }

  /** The socket failed: no outstanding request can be told apart from the lost replies any more. */
  private abandon(cause: ErrnoException | Error): void {
    for (const write of [...this.writes]) this.finish(write, netlinkError("apply route changes", cause));
    this.endDump(netlinkError("list routes", cause));
  }

  // A socket with nothing outstanding must not keep the process alive.
  private release(): void {
    if (this.writes.length === 0 && !this.dump) this.raw.unref();
  }
}

/** Writes a struct nlmsghdr at `offset` (port 0: the kernel fills it in); returns the offset after it. */
function writeHeader(buffer: Buffer, offset: number, length: number, type: number, flags: number, seq: number): number {
  buffer.writeUInt32LE(length, offset);
  buffer.writeUInt16LE(type, offset + 4);
  buffer.writeUInt16LE(flags, offset + 6);
  buffer.writeUInt32LE(seq, offset + 8);
  buffer.writeUInt32LE(0, offset + 12);
  return offset + NLMSG_HEADER_LENGTH;
}

/** The kernel reports -errno; carry its name as `code` like Node's own errors do. */
function errnoError(negativeErrno: number): Error & { code: string } {
  const code = errnoNames.get(-negativeErrno) ?? `errno ${-negativeErrno}`;
  return Object.assign(new Error(`Request rejected: ${code}`), { code });
}
