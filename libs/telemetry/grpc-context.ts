import { InterceptingCall, ListenerBuilder, status, type Interceptor, type Metadata } from "@grpc/grpc-js";
import { context, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Span } from "@opentelemetry/api";

// gRPC auto-instrumentation needs a loader hook under ESM; spans and trace context are made by hand instead,
// after OpenTelemetry's semantic conventions for RPC: a span named `package.Service/Method`, of kind CLIENT at the
// caller and SERVER at the callee, with rpc.system, rpc.service, rpc.method and rpc.grpc.status_code.

const tracer = trace.getTracer("trellis");

/** The rpc.* attributes of a call from its path, `/trellis.v1.Control/AttachEndpoint`. */
export function rpcAttributes(path: string): Attributes {
  const [service = "", method = ""] = path.replace(/^\//, "").split("/");
  return { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method };
}

/** Ends an RPC span with the call's gRPC status, an error unless OK. */
export function endRpcSpan(span: Span, code: number, message: string): void {
  span.setAttribute("rpc.grpc.status_code", code);
  if (code !== status.OK) span.setStatus({ code: SpanStatusCode.ERROR, message });
  span.end();
}

/**
 * A client interceptor: each unary call is a CLIENT span, whose context goes into the call's metadata. A stream
 * (IPAM's call stream) lives as long as its channel and carries each call's context itself: it only passes the
 * active context on.
 */
export const traceContextInterceptor: Interceptor = (options, nextCall) => {
  const definition = options.method_definition;
  const unary = !definition.requestStream && !definition.responseStream;
  const span = unary ? tracer.startSpan(definition.path.slice(1), { kind: SpanKind.CLIENT, attributes: rpcAttributes(definition.path) }) : undefined;
  const callContext = span ? trace.setSpan(context.active(), span) : context.active();
  return new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      propagation.inject(callContext, metadata, {
        set: (carrier, key, value) => carrier.set(key, value),
      });
      if (!span) return next(metadata, listener);
      next(
        metadata,
        new ListenerBuilder()
          .withOnReceiveStatus((received, nextStatus) => {
            endRpcSpan(span, received.code, received.details);
            nextStatus(received);
          })
          .build(),
      );
    },
  });
};

export function contextFromMetadata(metadata: Metadata): Context {
  return propagation.extract(context.active(), metadata, {
    get: (carrier, key) => {
      const values = carrier.get(key);
      return values.length > 0 ? String(values[0]) : undefined;
    },
    keys: (carrier) => Object.keys(carrier.getMap()),
  });
}
