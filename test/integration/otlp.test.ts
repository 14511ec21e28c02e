import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import { eventually } from "../support/eventually.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";
import { runTrellis, type CliResult } from "../support/trellis-cli.js";
import { startService, type ServiceProcess } from "../support/trellis-service.js";

// Spans of one `trellis run` reach an OTLP/HTTP receiver run here, sent by the CLI, the planner and IPAM as the
// standard OTEL_* variables tell them, and form one trace with the right parents: the CLI's command, its gRPC
// CLIENT span, the planner's SERVER span, the planner's work, IPAM's, and IPAM's publishes to NATS. The host is
// one by its heartbeat alone: no agent reports the container, so the run gives up waiting for it after a second.

/** A span as OTLP/JSON carries it, with the service that sent it. */
interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  kind: number;
  attributes: Record<string, unknown>;
}

const SPAN_KIND = { internal: 1, server: 2, client: 3, producer: 4, consumer: 5 };
const received: ReceivedSpan[] = [];
let receiver: Server;
let endpoint: string;
let nats: NatsServer;
let ipam: ServiceProcess;
let planner: ServiceProcess;
let run: CliResult;

interface OtlpValue {
  stringValue?: string;
  intValue?: string | number;
  boolValue?: boolean;
}
interface OtlpExport {
  resourceSpans: {
    resource: { attributes: { key: string; value: OtlpValue }[] };
    scopeSpans: { spans: (Omit<ReceivedSpan, "service" | "attributes"> & { attributes: { key: string; value: OtlpValue }[] })[] }[];
  }[];
}

const valueOf = (value: OtlpValue) => value.stringValue ?? (value.intValue !== undefined ? Number(value.intValue) : value.boolValue);

/** An OTLP/HTTP receiver of JSON trace exports, as a collector's would be. */
function startReceiver(): Promise<Server> {
  const server = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk: Buffer) => (body += chunk.toString()));
    request.on("end", () => {
      expect([request.method, request.url, request.headers["content-type"]]).toEqual(["POST", "/v1/traces", "application/json"]);
      for (const { resource, scopeSpans } of (JSON.parse(body) as OtlpExport).resourceSpans) {
        const service = String(valueOf(resource.attributes.find(({ key }) => key === "service.name")!.value));
        for (const { spans } of scopeSpans) {
          for (const span of spans) received.push({ ...span, service, attributes: Object.fromEntries(span.attributes.map(({ key, value }) => [key, valueOf(value)])) });
        }
      }
      response.writeHead(200, { "content-type": "application/json" }).end("{}");
    });
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve(server)));
}

beforeAll(async () => {
  receiver = await startReceiver();
  endpoint = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
  const otel = { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, OTEL_BSP_SCHEDULE_DELAY: "100" };
  nats = await startNatsServer();
  ipam = await startService("ipam", [`--nats=${nats.url}`, "--listen=127.0.0.1:0"], { env: otel });
  planner = await startService("planner", [`--nats=${nats.url}`, "--listen=127.0.0.1:0", `--ipam=${ipam.address}`], { env: otel });
  const nc = await connectBus({ servers: nats.url, name: "otlp-test" });
  const record = HostRecord.fromPartial({ host: "h1", address: "192.0.2.11", role: "host", heartbeatAt: new Date().toISOString(), interfaces: ["eth0"], heartbeatIntervalMs: 300_000 });
  await (await openBucket(nc, Buckets.hosts)).put("h1", codecOf(HostRecord).encode(record));
  await nc.close();
  const cli = { TRELLIS_PLANNER_ADDR: planner.address, TRELLIS_NATS_URL: nats.url };
  const created = await runTrellis(cli, "network", "create", "--subnet=10.61.0.0/24", "-o", "parent=eth0", "traced_net");
  expect(created.code, created.stderr).toBe(0);
  run = await runTrellis({ ...cli, ...otel, TRELLIS_WAIT_SECONDS: "1" }, "run", "--net=traced_net", "--host=h1", "--name=traced1");
  // The services send their batches every 100 ms, and at the latest when they stop.
  await planner.stop();
  await ipam.stop();
}, 60_000);

afterAll(async () => {
  await planner?.stop();
  await ipam?.stop();
  await nats?.stop();
  receiver?.close();
});

function one(spans: ReceivedSpan[], what: Partial<ReceivedSpan>): ReceivedSpan {
  const found = spans.filter((span) => Object.entries(what).every(([key, value]) => span[key as keyof ReceivedSpan] === value));
  expect(found.map(({ service, name }) => `${service} ${name}`), JSON.stringify(what)).toHaveLength(1);
  return found[0]!;
}

describe("OTLP/HTTP export of one trellis run", () => {
  it("sends the CLI's, the planner's and IPAM's spans of the run as one trace, under the command's span", async () => {
    expect(run.stderr).toMatch(/timed out after 1s waiting for the agent of host h1 to make container traced1: is it running \(trellis agent --host=h1\)\?/);
    const root = await eventually("the run's span at the receiver", () => one(received, { name: "cli.run" }));
    expect(root.parentSpanId ?? "").toBe("");
    const trace = await eventually(
      "the planner's and IPAM's spans of the run",
      () => received.filter((span) => span.traceId === root.traceId),
      (spans) => ["trellis-cli", "trellis-planner", "trellis-ipam"].every((service) => spans.some((span) => span.service === service)),
    );
    const ids = new Set(trace.map((span) => span.spanId));
    expect(trace.filter((span) => span !== root).every((span) => span.parentSpanId && ids.has(span.parentSpanId))).toBe(true);
  });

  it("names gRPC calls by the RPC conventions: a CLIENT span in the caller, its SERVER span in the callee", () => {
    const root = one(received, { name: "cli.run" });
    const inTrace = received.filter((span) => span.traceId === root.traceId);
    const name = "trellis.v1.Control/AttachEndpoint";
    const client = one(inTrace, { name, kind: SPAN_KIND.client });
    const server = one(inTrace, { name, kind: SPAN_KIND.server });
    expect([client.service, client.parentSpanId]).toEqual(["trellis-cli", root.spanId]);
    expect([server.service, server.parentSpanId]).toEqual(["trellis-planner", client.spanId]);
    for (const span of [client, server]) {
      expect(span.attributes).toMatchObject({ "rpc.system": "grpc", "rpc.service": "trellis.v1.Control", "rpc.method": "AttachEndpoint", "rpc.grpc.status_code": 0 });
    }
    const attach = one(inTrace, { name: "planner.endpoint.attach" });
    expect(attach.parentSpanId).toBe(server.spanId);
  });

  it("has IPAM's allocation under the planner's attach, and its NATS publishes by the messaging conventions", () => {
    const root = one(received, { name: "cli.run" });
    const inTrace = received.filter((span) => span.traceId === root.traceId);
    const byId = new Map(inTrace.map((span) => [span.spanId, span]));
    const ancestors = (span: ReceivedSpan) => {
      const names: string[] = [];
      for (let at = byId.get(span.parentSpanId ?? ""); at; at = byId.get(at.parentSpanId ?? "")) names.push(at.name);
      return names;
    };
    const allocation = one(inTrace, { name: "ipam.allocateAddress", service: "trellis-ipam" });
    expect(ancestors(allocation)).toContain("planner.endpoint.attach");
    const publishes = inTrace.filter((span) => span.service === "trellis-ipam" && span.kind === SPAN_KIND.producer);
    expect(publishes.length).toBeGreaterThan(0);
    for (const publish of publishes) {
      expect(publish.name).toBe("publish $KV.trellis-ipam");
      expect(publish.attributes).toMatchObject({ "messaging.system": "nats", "messaging.destination.name": "$KV.trellis-ipam", "messaging.operation.type": "publish" });
    }
    expect(publishes.some((publish) => ancestors(publish).includes("ipam.allocateAddress"))).toBe(true);
  });
});
