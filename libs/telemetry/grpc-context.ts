import { InterceptingCall, type Interceptor, type Metadata } from "@grpc/grpc-js";
import { context, propagation, type Context } from "@opentelemetry/api";

// gRPC auto-instrumentation needs a loader hook under ESM; trace context is carried by hand instead.

/** A client interceptor that puts the active trace context into each call's metadata. */
export const traceContextInterceptor: Interceptor = (options, nextCall) =>
  new InterceptingCall(nextCall(options), {
    start(metadata, listener, next) {
      propagation.inject(context.active(), metadata, {
        set: (carrier, key, value) => carrier.set(key, value),
      });
      next(metadata, listener);
    },
  });

export function contextFromMetadata(metadata: Metadata): Context {
  return propagation.extract(context.active(), metadata, {
    get: (carrier, key) => {
      const values = carrier.get(key);
      return values.length > 0 ? String(values[0]) : undefined;
    },
    keys: (carrier) => Object.keys(carrier.getMap()),
  });
}
