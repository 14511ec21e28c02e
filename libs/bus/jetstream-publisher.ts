import { JetStreamApiError, type PubAck } from "@nats-io/jetstream";
import { createInbox, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/transport-node";
import { inboxPrefixOf } from "./connection.js";
import { BusUnavailableError } from "./errors.js";
import { destinationOf, withMessagingSpan } from "./trace.js";

/** What JetStream answers a publish with: the ack's fields, or the API error. */
interface AckBody {
  stream?: string;
  seq?: number;
  duplicate?: boolean;
  error?: { code: number; err_code: number; description: string };
}

interface PendingAck {
  resolve(ack: PubAck): void;
  reject(error: Error): void;
  deadline: number;
}

const NO_RESPONDERS = 503;
const textDecoder = new TextDecoder();

/**
 * JetStream publishes whose acks come back to one wildcard subscription, matched by reply subject.
 * `js.publish` makes each publish a request of its own, with its own timer, promise and (even when it
 * succeeds) a discarded Error; that doubled the client CPU of IPAM's writes, which are its hot path.
 * Failures are the same JetStreamApiError that `js.publish` throws.
 */
export class JetStreamPublisher {
  private readonly prefix: string;
  private readonly pending = new Map<string, PendingAck>();
  private readonly subscription: Subscription;
  private readonly sweeper: NodeJS.Timeout;
  private serial = 0;
  private queued: { token: string; subject: string; data: Uint8Array; headers: MsgHdrs }[] = [];

  constructor(
    private readonly nc: NatsConnection,
    private readonly timeoutMs = 5_000,
  ) {
    this.prefix = `${createInbox(inboxPrefixOf(nc))}.`;
    this.subscription = nc.subscribe(`${this.prefix}*`, { callback: (_, msg) => this.settle(msg.subject, msg.data, msg.headers) });
    this.sweeper = setInterval(() => this.expire(Date.now()), Math.min(timeoutMs, 1_000));
    this.sweeper.unref();
  }

  publish(subject: string, data: Uint8Array, headers: MsgHdrs): Promise<PubAck> {
    return withMessagingSpan("publish", destinationOf(subject), () => {
      const token = String(++this.serial);
      return new Promise<PubAck>((resolve, reject) => {
        this.pending.set(token, { resolve, reject, deadline: Date.now() + this.timeoutMs });
        this.queued.push({ token, subject, data, headers });
        if (this.queued.length === 1) setImmediate(() => this.sendQueued());
      });
    });
  }

  /**
   * Publishes made while one turn of the event loop handled its sockets leave in one write: nats.js
   * writes at the end of each callback, and a write per message cost IPAM a fifth of its CPU.
   */
  private sendQueued(): void {
    const queued = this.queued;
    this.queued = [];
    for (const { token, subject, data, headers } of queued) {
      try {
        this.nc.publish(subject, data, { reply: this.prefix + token, headers });
      } catch (error) {
        this.fail(token, new BusUnavailableError(`failed to publish to ${subject}: ${(error as Error).message}`, { cause: error }));
      }
    }
  }

  close(): void {
    clearInterval(this.sweeper);
    this.subscription.unsubscribe();
    for (const token of [...this.pending.keys()]) this.fail(token, new BusUnavailableError("failed to publish: the publisher was closed before the ack came"));
  }

  private settle(subject: string, data: Uint8Array, headers: MsgHdrs | undefined): void {
    const token = subject.slice(this.prefix.length);
    const pending = this.pending.get(token);
    if (!pending) return;
    this.pending.delete(token);
    if (data.length === 0 && headers?.code === NO_RESPONDERS) {
      pending.reject(new BusUnavailableError("failed to publish: no JetStream stream listens on the subject"));
      return;
    }
    const body = JSON.parse(textDecoder.decode(data)) as AckBody;
    if (body.error) pending.reject(new JetStreamApiError(body.error));
    else pending.resolve({ stream: body.stream ?? "", seq: body.seq ?? 0, duplicate: body.duplicate ?? false });
  }

  private expire(now: number): void {
    for (const [token, pending] of this.pending) {
      if (pending.deadline <= now) this.fail(token, new BusUnavailableError(`failed to publish: no ack from JetStream within ${this.timeoutMs} ms`));
    }
  }

  private fail(token: string, error: Error): void {
    const pending = this.pending.get(token);
    this.pending.delete(token);
    pending?.reject(error);
  }
}
