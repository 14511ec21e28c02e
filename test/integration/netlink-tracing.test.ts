import { randomBytes } from "node:crypto";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { SpanStatusCode } from "@opentelemetry/api";
import { afterAll, beforeAll, expect, it } from "vitest";
import { startTracing, stopTracing } from "../../libs/telemetry/tracing.js";
import { createNamespace, deleteNamespace, namespaceExists, openNetlink } from "../../libs/netlink/index.js";
import { eventually } from "../support/eventually.js";

const exporter = new InMemorySpanExporter();
const netns = `tnl-${randomBytes(4).toString("hex")}`;

beforeAll(() => startTracing({ serviceName: "netlink-test", exporter }));
afterAll(async () => {
  if (namespaceExists(netns)) await deleteNamespace(netns);
  await stopTracing();
});

it("makes every netlink operation a span with its namespace, link and cidr, failures marked as errors", async () => {
  await createNamespace(netns);
  const nl = await openNetlink(netns);
  try {
    const lo = (await nl.getLink("lo"))!;
    await nl.setUp(lo.index);
    await nl.addAddress(lo.index, "10.9.0.1/32");
    await expect(nl.addAddress(lo.index, "10.9.0.1/32")).rejects.toMatchObject({ code: "EEXIST" });
    await nl.addRoute({ dst: "10.8.0.0/16", linkIndex: lo.index });
  } finally {
    nl.close();
  }

  // Export waits for the SDK's asynchronous resource detection, so spans can arrive a little after they end.
  await eventually("seven finished spans", () => exporter.getFinishedSpans().length, (count) => count === 7);
  const spans = exporter.getFinishedSpans();
  expect(spans.map((span) => span.name)).toEqual([
    "netlink.netns.create",
    "netlink.open",
    "netlink.link.get",
    "netlink.link.set_up",
    "netlink.address.add",
    "netlink.address.add",
    "netlink.route.add",
  ]);
  for (const span of spans) expect(span.attributes.netns).toBe(netns);
  const [added, duplicate] = spans.filter((span) => span.name === "netlink.address.add");
  expect(added.attributes).toMatchObject({ cidr: "10.9.0.1/32", "link.index": 1 });
  expect(added.status.code).not.toBe(SpanStatusCode.ERROR);
  expect(duplicate.status).toMatchObject({ code: SpanStatusCode.ERROR, message: expect.stringMatching(/^failed to add address 10\.9\.0\.1\/32 to link 1: .*\(EEXIST\)$/) });
  expect(spans.find((span) => span.name === "netlink.link.get")?.attributes["link.name"]).toBe("lo");
  expect(spans.find((span) => span.name === "netlink.route.add")?.attributes["route.dst"]).toBe("10.8.0.0/16");
});
