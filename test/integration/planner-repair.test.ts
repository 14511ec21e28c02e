import { jetstreamManager } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, desiredKey, INTENT_STREAM, nameKey } from "../../libs/bus/subjects.js";
import { callUnary } from "../../libs/grpc/unary.js";
import { Endpoint, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { eventually } from "../support/eventually.js";

// The planner's safety nets: desired state that was deleted, overwritten or left behind is put right by the
// periodic comparison; intent results and intents are kept for the replay window only.

const RETENTION_MS = 2_000;
const REPAIR_INTERVAL_MS = 300;

let plane: ControlPlane;
let desired: KV;
let names: KV;
let endpoint: Endpoint;

const attach = (container: string, intentId = "") =>
  callUnary(plane.control.attachEndpoint.bind(plane.control), { intentId, spec: { network: "fix_net", container, host: "h1", ipv4: "", ipv6: "" } });

beforeAll(async () => {
  plane = await startControlPlane({ intentRetentionMs: RETENTION_MS, repairIntervalMs: REPAIR_INTERVAL_MS });
  await plane.registerHost("h1", "192.168.1.11");
  await callUnary(plane.control.createNetwork.bind(plane.control), { intentId: "", spec: NetworkSpec.fromPartial({ name: "fix_net", subnets: ["10.96.0.0/24"] }) });
  endpoint = await attach("fixme");
  desired = await openBucket(plane.nc, Buckets.desired);
  names = await openBucket(plane.nc, Buckets.names);
});

afterAll(async () => {
  await plane?.stop();
});

const isEndpoint = (bytes: Uint8Array | undefined) => {
  try {
    return bytes !== undefined && JSON.stringify(Endpoint.toJSON(codecOf(Endpoint).decode(bytes))) === JSON.stringify(Endpoint.toJSON(endpoint));
  } catch {
    return false;
  }
};

describe("the planner's repair of desired state", () => {
  it("writes a deleted desired key again, as it was", async () => {
    const key = desiredKey("h1", endpoint.id);
    await desired.delete(key);
    const repaired = await eventually("the desired key written again", () => desired.get(key), (entry) => entry?.operation === "PUT" && isEndpoint(entry.value));
    expect(codecOf(Endpoint).decode(repaired!.value)).toEqual(endpoint);
  });

  it("puts right a desired key holding garbage, and a name holding another value", async () => {
    const key = desiredKey("h1", endpoint.id);
    await desired.put(key, new Uint8Array([0xde, 0xad, 0xbe, 0xef, 0x01, 0x02]));
    const nameOf = nameKey(endpoint.networkId, "fixme");
    const good = (await names.get(nameOf))!.value;
    await names.put(nameOf, new TextEncoder().encode("not a name"));
    await eventually("the desired key put right", () => desired.get(key), (entry) => entry?.operation === "PUT" && isEndpoint(entry.value));
    await eventually("the name put right", () => names.get(nameOf), (entry) => entry?.operation === "PUT" && Buffer.from(entry.value).equals(Buffer.from(good)));
  });

  it("removes desired keys and names of containers that do not exist, and leaves the others", async () => {
    const orphan = Endpoint.fromPartial({ ...endpoint, id: "0".repeat(32), container: "ghost" });
    await desired.put(desiredKey("h1", orphan.id), codecOf(Endpoint).encode(orphan));
    await names.put(nameKey(endpoint.networkId, "ghost"), new Uint8Array([1, 2, 3]));
    await eventually("the orphan desired key removed", () => desired.get(desiredKey("h1", orphan.id)), (entry) => entry?.operation !== "PUT");
    await eventually("the orphan name removed", () => names.get(nameKey(endpoint.networkId, "ghost")), (entry) => entry?.operation !== "PUT");
    expect(isEndpoint((await desired.get(desiredKey("h1", endpoint.id)))?.value)).toBe(true);
  });
});

describe("the replay window", () => {
  it("forgets an intent's result after the retention, and the intent stream keeps no longer", async () => {
    await attach("kept-for-a-while", "intent-expiring");
    const intents = await openBucket(plane.nc, Buckets.intents);
    expect((await intents.get("intent-expiring"))?.operation).toBe("PUT");
    await eventually("the intent result to expire", () => intents.get("intent-expiring"), (entry) => entry === null || entry.operation !== "PUT", 15_000);
    const jsm = await jetstreamManager(plane.nc);
    expect((await jsm.streams.info(`KV_${Buckets.intents}`)).config.max_age).toBe(RETENTION_MS * 1_000_000);
    expect((await jsm.streams.info(INTENT_STREAM)).config.max_age).toBe(RETENTION_MS * 1_000_000);
  });
});
