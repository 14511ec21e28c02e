// Every Trellis gRPC server speaks the standard health protocol, which kubelet's gRPC probes use.
import { afterEach, describe, expect, it } from "vitest";
import { credentials, status } from "@grpc/grpc-js";
import { serveGrpc, type ServingServer } from "../../libs/grpc/serve.js";
import { callUnary } from "../../libs/grpc/unary.js";
import { HealthCheckResponse_ServingStatus as ServingStatus, HealthClient, type HealthCheckResponse } from "../../libs/proto/gen/grpc/health/v1/health.js";
import { IpamService } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { refusal } from "../support/refusal.js";

let server: ServingServer | undefined;
let client: HealthClient | undefined;

afterEach(async () => {
  client?.close();
  await server?.stop();
  server = client = undefined;
});

async function serveIpamShape(): Promise<HealthClient> {
  server = await serveGrpc(IpamService, {}, "127.0.0.1:0");
  client = new HealthClient(server.address, credentials.createInsecure());
  return client;
}

describe("gRPC health", () => {
  it("reports SERVING for the server and its service, and NOT_FOUND naming what it has for any other", async () => {
    const health = await serveIpamShape();
    expect(await callUnary(health.check.bind(health), { service: "" })).toEqual({ status: ServingStatus.SERVING });
    expect(await callUnary(health.check.bind(health), { service: "trellis.v1.Ipam" })).toEqual({ status: ServingStatus.SERVING });
    const unknown = await refusal(callUnary(health.check.bind(health), { service: "trellis.v1.Planner" }));
    expect([unknown.code, unknown.details]).toEqual([status.NOT_FOUND, "no service trellis.v1.Planner here; there are trellis.v1.Ipam"]);
  });

  it("tells a watcher SERVING at once, and NOT_SERVING when the server stops, then ends the watch", async () => {
    const health = await serveIpamShape();
    const seen: HealthCheckResponse[] = [];
    const watch = health.watch({ service: "" });
    const ended = new Promise<void>((resolve) => {
      watch.on("end", () => resolve());
      watch.on("error", () => resolve());
    });
    watch.on("data", (response: HealthCheckResponse) => seen.push(response));
    await new Promise((resolve) => watch.once("data", resolve));
    await server!.stop();
    server = undefined;
    await ended;
    expect(seen.map((response) => response.status)).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
  });
});
