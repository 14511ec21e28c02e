import { Metadata, status, type ClientDuplexStream, type ServerDuplexStream, type ServiceError } from "@grpc/grpc-js";
import { toServiceError } from "./status-error.js";

// Unary-like calls multiplexed on one bidirectional stream: each call and its result carry an id, and a
// failed call's result is its status. grpc-js spends about ten times the CPU on a unary call that it
// spends on a stream message, which matters for calls made per container.

/** A result's outcome: a `$case` per answer, and "status" for a failure. */
type Outcome = { $case: string; value: unknown };

interface Envelope {
  id: number;
}

interface ResultEnvelope extends Envelope {
  result?: Outcome | undefined;
}

/** How a failed call is written on the stream: its gRPC status. */
interface StatusOutcome {
  $case: "status";
  value: { code: number; message: string };
}

/** The answers a result may carry, without the failure. */
type Answer<R extends ResultEnvelope> = Exclude<NonNullable<R["result"]>, StatusOutcome>;

interface PendingCall {
  resolve(outcome: Outcome): void;
  reject(error: ServiceError): void;
  deadline: number;
}

/**
 * The client side: `call` sends one call and resolves with its outcome, or rejects with a ServiceError as
 * a unary call would. The stream opens on the first call and again after it ends; its end fails the calls
 * then in flight with the stream's own status.
 */
export class CallStreamClient<C extends Envelope, R extends ResultEnvelope> {
  private stream: ClientDuplexStream<C, R> | undefined;
  private nextId = 1;
  private readonly pending = new Map<number, PendingCall>();
  /** One timer for every call's deadline: a timer per call cost the caller a sixth of its CPU per call. */
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly open: () => ClientDuplexStream<C, R>,
    private readonly timeoutMs = 30_000,
  ) {
    this.sweeper = setInterval(() => this.expire(Date.now()), Math.min(timeoutMs, 1_000));
    this.sweeper.unref();
  }

  call(envelope: Omit<C, "id">): Promise<Answer<R>> {
    const id = this.nextId++;
    return new Promise<Outcome>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, deadline: Date.now() + this.timeoutMs });
      this.current().write({ ...envelope, id } as C);
    }) as Promise<Answer<R>>;
  }

  close(): void {
    clearInterval(this.sweeper);
    const stream = this.stream;
    this.stream = undefined;
    this.failAll(serviceError(status.CANCELLED, "the client was closed"));
    stream?.end();
  }

  private current(): ClientDuplexStream<C, R> {
    if (this.stream) return this.stream;
    const stream = this.open();
    stream.on("data", (result: R) => this.settle(result));
    stream.on("error", (error: ServiceError) => this.ended(stream, error));
    stream.on("end", () => this.ended(stream, serviceError(status.UNAVAILABLE, "the server ended the call stream")));
    this.stream = stream;
    return stream;
  }

  private settle(result: R): void {
    const pending = this.pending.get(result.id);
    if (!pending || !result.result) return;
    this.pending.delete(result.id);
    if (result.result.$case === "status") {
      const { code, message } = (result.result as StatusOutcome).value;
      pending.reject(serviceError(code, message));
    } else {
      pending.resolve(result.result);
    }
  }

  private ended(stream: ClientDuplexStream<C, R>, error: ServiceError): void {
    if (this.stream !== stream) return;
    this.stream = undefined;
    this.failAll(error);
  }

  private expire(now: number): void {
    for (const [id, pending] of this.pending) {
      if (pending.deadline <= now) this.fail(id, serviceError(status.DEADLINE_EXCEEDED, "Deadline exceeded"));
    }
  }

  private fail(id: number, error: ServiceError): void {
    const pending = this.pending.get(id);
    this.pending.delete(id);
    pending?.reject(error);
  }

  private failAll(error: ServiceError): void {
    for (const id of [...this.pending.keys()]) this.fail(id, error);
  }
}

/**
 * The server side: every call is handled as it arrives, concurrently, and its result written when ready.
 * A thrown error becomes the call's status; the stream ends once the client has ended it and every
 * call in flight is answered.
 */
export function serveCallStream<C extends Envelope, R extends ResultEnvelope>(handle: (call: C) => Promise<Outcome>) {
  return (stream: ServerDuplexStream<C, R>): void => {
    const inFlight = new Set<Promise<void>>();
    stream.on("data", (call: C) => {
      const answering = handle(call)
        .catch((error: unknown): StatusOutcome => {
          const { code, details } = toServiceError(error);
          return { $case: "status", value: { code: code ?? status.INTERNAL, message: details ?? "" } };
        })
        .then((result) => {
          if (!stream.cancelled && stream.writable) stream.write({ id: call.id, result } as R);
        })
        .finally(() => inFlight.delete(answering));
      inFlight.add(answering);
    });
    stream.on("end", () => void Promise.all(inFlight).then(() => stream.end()));
    stream.on("error", () => undefined);
  };
}

/** The error a unary call fails with, so that callers handle both the same way. */
function serviceError(code: status, details: string): ServiceError {
  return Object.assign(new Error(`${code} ${status[code]}: ${details}`), { code, details, metadata: new Metadata() });
}
