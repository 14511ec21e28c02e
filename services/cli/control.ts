import { randomUUID } from "node:crypto";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { clientOptions } from "../../libs/grpc/unary.js";
import { clientCredentials } from "../../libs/grpc/credentials.js";
import { settings } from "./settings.js";

export function controlClient(): ControlClient {
  return new ControlClient(settings.plannerAddress(), clientCredentials(settings.tls()), clientOptions);
}

/** Every mutating call is an intent with its own id: a retried call is then applied once. */
export function newIntentId(): string {
  return randomUUID();
}
