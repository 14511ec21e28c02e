import { appendFileSync } from "node:fs";
import type { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import type { ReadableSpan, SpanExporter, SpanProcessor } from "@opentelemetry/sdk-trace-base";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import {
  CompositePropagator,
  ExportResultCode,
  hrTimeToMicroseconds,
  W3CBaggagePropagator,
  W3CTraceContextPropagator,
  type ExportResult,
} from "@opentelemetry/core";
import { context, propagation, SpanStatusCode, trace, type Attributes, type Span, type SpanKind } from "@opentelemetry/api";

export const tracer = trace.getTracer("trellis");

export interface TracingOptions {
  serviceName: string;
  /** Extra exporter (tests pass an in-memory one). */
  exporter?: SpanExporter;
  /**
   * False for a service that calls no other: when it records no spans, it needs no trace context at all,
   * and keeping one costs every promise an async hook. True by default.
   */
  passesContextOn?: boolean;
}

let provider: NodeTracerProvider | undefined;

let propagating = false;

/**
 * Starts tracing for this process. Spans go to OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set, to a
 * JSON-lines file when TRELLIS_TRACE_FILE is set (the lab uses it), and to `options.exporter`.
 * The SDK's all-in-one NodeSDK is not used: it loads every exporter there is, which costs each CLI
 * call seconds in the emulated lab; the OTLP exporter is loaded only when asked for.
 * With nowhere to send spans, none are recorded (that cost IPAM a tenth of its CPU), but trace
 * context still passes through, so that the spans of processes that do export join one trace; and the SDK is
 * not even loaded (an agent that exports nothing need not keep it in memory).
 */
export async function startTracing(options: TracingOptions): Promise<void> {
  if (provider || propagating) return;
  if (!process.env.OTEL_EXPORTER_OTLP_ENDPOINT && !process.env.TRELLIS_TRACE_FILE && !options.exporter) {
    if (options.passesContextOn ?? true) propagateOnly();
    return;
  }
  const [{ NodeTracerProvider }, { BatchSpanProcessor, SimpleSpanProcessor }, { resourceFromAttributes }] = await Promise.all([
    import("@opentelemetry/sdk-trace-node").then(exportsOf),
    import("@opentelemetry/sdk-trace-base").then(exportsOf),
    import("@opentelemetry/resources").then(exportsOf),
  ]);
  const spanProcessors: SpanProcessor[] = [];
  if (process.env.OTEL_EXPORTER_OTLP_ENDPOINT) {
    // A CommonJS package: its exports are the import's default, which is all the bundle's import has (no named ones).
    const { OTLPTraceExporter } = (await import("@opentelemetry/exporter-trace-otlp-http")).default;
    spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
  }
  if (process.env.TRELLIS_TRACE_FILE) {
    spanProcessors.push(new SimpleSpanProcessor(new JsonLinesFileExporter(process.env.TRELLIS_TRACE_FILE)));
  }
  if (options.exporter) spanProcessors.push(new SimpleSpanProcessor(options.exporter));
  provider = new NodeTracerProvider({ resource: resourceFromAttributes({ "service.name": options.serviceName }), spanProcessors });
  provider.register();
}

/** A module's exports, whether it was loaded as ESM or (in the bundle) as CommonJS, whose exports are the default. */
function exportsOf<T extends object>(module: T): T {
  return (module as { default?: T }).default ?? module;
}

/** The context manager and propagator a registered provider would set, and no tracer: spans are no-ops. */
function propagateOnly(): void {
  context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
  propagation.setGlobalPropagator(new CompositePropagator({ propagators: [new W3CTraceContextPropagator(), new W3CBaggagePropagator()] }));
  propagating = true;
}

export async function stopTracing(): Promise<void> {
  const running = provider;
  provider = undefined;
  await running?.shutdown();
}

/** Runs `fn` inside a new active span (of `kind`, INTERNAL by default) that records failures and always ends. */
export async function withSpan<T>(name: string, attributes: Attributes, fn: (span: Span) => Promise<T>, kind?: SpanKind): Promise<T> {
  return tracer.startActiveSpan(name, { attributes, kind }, async (span) => {
    try {
      return await fn(span);
    } catch (error) {
      span.recordException(error as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (error as Error).message });
      throw error;
    } finally {
      span.end();
    }
  });
}

/** One JSON object per span and line; several processes may append to the same file. */
export interface SpanRecord {
  service: string;
  name: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  startMicros: number;
  durationMicros: number;
  status: number;
  attributes: Attributes;
}

class JsonLinesFileExporter implements SpanExporter {
  constructor(private readonly path: string) {}

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    const lines = spans.map((span) => JSON.stringify(toSpanRecord(span))).join("\n");
    try {
      appendFileSync(this.path, `${lines}\n`);
      done({ code: ExportResultCode.SUCCESS });
    } catch (error) {
      done({ code: ExportResultCode.FAILED, error: error as Error });
    }
  }

  async shutdown(): Promise<void> {}
}

export function toSpanRecord(span: ReadableSpan): SpanRecord {
  return {
    service: String(span.resource.attributes["service.name"] ?? ""),
    name: span.name,
    traceId: span.spanContext().traceId,
    spanId: span.spanContext().spanId,
    parentSpanId: span.parentSpanContext?.spanId,
    startMicros: hrTimeToMicroseconds(span.startTime),
    durationMicros: hrTimeToMicroseconds(span.duration),
    status: span.status.code,
    attributes: span.attributes,
  };
}
