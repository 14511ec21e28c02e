import { context, propagation, SpanKind, type Context } from "@opentelemetry/api";
import { withSpan } from "../telemetry/tracing.js";
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/transport-node";

// There is no NATS instrumentation for OpenTelemetry JS: trace context rides in message headers
// (`traceparent`, `tracestate`) through the globally registered W3C propagator.

export function headersWithTrace(ctx: Context = context.active()): MsgHdrs {
  const hdrs = natsHeaders();
  propagation.inject(ctx, hdrs, {
    set: (carrier, key, value) => carrier.set(key, value),
  });
  return hdrs;
}

export function contextFromHeaders(hdrs: MsgHdrs | undefined): Context {
  if (!hdrs) return context.active();
  return propagation.extract(context.active(), hdrs, {
    get: (carrier, key) => carrier.get(key) || undefined,
    keys: (carrier) => carrier.keys(),
  });
}

/** The `traceparent` of a context, for places that carry it as a plain string (KV values). */
export function traceparentOf(ctx: Context = context.active()): string {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier.traceparent ?? "";
}

export function contextFromTraceparent(traceparent: string): Context {
  if (!traceparent) return context.active();
  return propagation.extract(context.active(), { traceparent });
}

/**
 * Runs `work` in a span after OpenTelemetry's messaging conventions: `publish <destination>` (PRODUCER) for a
 * publish until its ack, `process <destination>` (CONSUMER) for handling a delivery. `destination` is the subject,
 * or for a KV write its bucket's subject prefix: never a key, which would make a name per address or container.
 */
export function withMessagingSpan<T>(operation: "publish" | "process", destination: string, work: () => Promise<T>): Promise<T> {
  const kind = operation === "publish" ? SpanKind.PRODUCER : SpanKind.CONSUMER;
  const attributes = { "messaging.system": "nats", "messaging.destination.name": destination, "messaging.operation.type": operation, "messaging.operation.name": operation };
  return withSpan(`${operation} ${destination}`, attributes, work, kind);
}

/** A subject's destination for a span's name: `$KV.<bucket>` for a KV key's subject, else the subject. */
export function destinationOf(subject: string): string {
  return subject.startsWith("$KV.") ? subject.split(".").slice(0, 2).join(".") : subject;
}
