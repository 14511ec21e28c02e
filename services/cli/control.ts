import { randomUUID } from "node:crypto";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { clientOptions, insecure } from "../../libs/grpc/unary.js";
import { settings } from "./settings.js";

export function controlClient(): ControlClient {
  return new ControlClient(settings.plannerAddress(), insecure(), clientOptions);
}

/** Every mutating call is an intent with its own id: a retried call is then applied once. */
export function newIntentId(): string {
  return randomUUID();
}
