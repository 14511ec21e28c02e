import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, desiredKey, nameKey } from "../../libs/bus/subjects.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import { ControlApi } from "../../libs/control-client/index.js";
import { IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { startTrellisService, type TrellisService } from "../support/deployed-nats.js";
import { eventually } from "../support/eventually.js";

// Two `trellis planner` processes on one NATS. A controller streams attaches at them; the one it talks to is
// killed with SIGKILL in the middle. Each intent is retried, with its intent id, at the other replica.

const INTENTS = 120;
const KILL_AFTER = 40;

let plane: ControlPlane;
let planners: TrellisService[];
/** A controller's client of both replicas: it retries an intent, with its intent id, at the other when one fails. */
let control: ControlApi;
let ipam: IpamClient;

async function attach(index: number): Promise<{ endpoint: Endpoint; answeredAt: number }> {
  const spec = { network: "fo_net", container: `f${index}`, host: `h${index % 5}`, ipv4: "", ipv6: "" };
  const endpoint = await control.attachEndpoint(spec, { intentId: `failover-${index}` });
  return { endpoint, answeredAt: Date.now() };
}

beforeAll(async () => {
  plane = await startControlPlane();
  for (let i = 0; i < 5; i++) await plane.registerHost(`h${i}`, `192.168.1.${11 + i}`);
  const args = ["planner", "--listen=127.0.0.1:0", `--ipam=${plane.ipam.address}`, `--nats=${plane.nats.url}`];
  planners = [await startTrellisService(args, {}), await startTrellisService(args, {})];
  control = new ControlApi({ addresses: planners.map((planner) => planner.address) });
  ipam = new IpamClient(plane.ipam.address, insecure(), clientOptions);
  await control.createNetwork(NetworkSpec.fromPartial({ name: "fo_net", subnets: ["10.95.0.0/16"] }));
});

afterAll(async () => {
  control?.close();
  ipam?.close();
  await Promise.all((planners ?? []).map((planner) => planner.stop()));
  await plane?.stop();
});

describe("a planner replica killed in the middle of a stream of intents", () => {
  it("is taken over by the other within 5 s: no intent lost or applied twice, no address left to nothing", async () => {
    const answers: Awaited<ReturnType<typeof attach>>[] = [];
    let killedAt = 0;
    for (let i = 0; i < INTENTS; i++) {
      if (i === KILL_AFTER) {
        // Mid-intent: the next attach is sent, then its replica dies under it.
        const inFlight = attach(i);
        await new Promise((resolve) => setTimeout(resolve, 2));
        killedAt = Date.now();
        await planners[0]!.kill();
        answers.push(await inFlight);
        continue;
      }
      answers.push(await attach(i));
    }
    const firstAfterKill = answers.slice(KILL_AFTER).find((answer) => answer.answeredAt >= killedAt)!;
    expect(firstAfterKill.answeredAt - killedAt).toBeLessThan(5_000);

    // Every intent made its container once, with one address each, and nothing else holds one.
    const listed = await control.listEndpoints("fo_net");
    expect(listed.map((e) => e.container).sort()).toEqual(answers.map((a) => a.endpoint.container).sort());
    for (const answer of answers) expect(listed.find((e) => e.container === answer.endpoint.container)).toEqual(answer.endpoint);
    const networkId = listed[0]!.networkId;
    const { allocations } = await callUnary(ipam.listAllocations.bind(ipam), { networkId });
    const held = allocations.filter((a) => a.endpointId !== "").map((a) => `${a.endpointId} ${a.address}`).sort();
    expect(held).toEqual(listed.map((e) => `${e.id} ${e.addresses[0]}`).sort());
    expect(new Set(listed.map((e) => e.addresses[0])).size).toBe(INTENTS);

    // Each host's desired state and each name are there, the one intent cut off included.
    const desired = await openBucket(plane.nc, Buckets.desired);
    const names = await openBucket(plane.nc, Buckets.names);
    for (const endpoint of listed) {
      const key = desiredKey(endpoint.host, endpoint.id);
      const entry = await eventually(`the desired key of ${endpoint.container}`, () => desired.get(key), (e) => e?.operation === "PUT");
      expect(codecOf(Endpoint).decode(entry!.value)).toEqual(endpoint);
      expect((await names.get(nameKey(endpoint.networkId, endpoint.container)))?.operation).toBe("PUT");
    }
  });
});
