import { status } from "@grpc/grpc-js";
import { KvWatchInclude } from "@nats-io/kv";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { openBucket } from "../../libs/bus/connection.js";
import { getValue } from "../../libs/bus/kv.js";
import { Buckets, desiredKey, nameKey } from "../../libs/bus/subjects.js";
import { codecOf } from "../../libs/bus/codec.js";
import { callUnary, clientOptions, insecure } from "../../libs/grpc/unary.js";
import { IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { Endpoint, EndpointSpec, NetworkSpec, type Network } from "../../libs/proto/gen/trellis/v1/network.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { eventually } from "../support/eventually.js";

// An attach with take_over (the Docker plugin's hand-over from the IPAM-only holder of a container's address to
// the container's own endpoint), against a real nats-server, IPAM and planner: one intent, and the address is
// never free in between.

let plane: ControlPlane;
let ipam: IpamClient;
let network: Network;
const NETNS = "/run/netns/trtest-take-over";

const attach = (spec: Partial<EndpointSpec>, intentId = "") =>
  callUnary(plane.control.attachEndpoint.bind(plane.control), { intentId, spec: EndpointSpec.fromPartial({ network: "tk_net", host: "h1", ...spec }) });
const detach = (container: string) => callUnary(plane.control.detachEndpoint.bind(plane.control), { intentId: "", container });
const inspect = (container: string) => callUnary(plane.control.inspectEndpoint.bind(plane.control), { container });
const allocations = async () => (await callUnary(ipam.listAllocations.bind(ipam), { networkId: network.id })).allocations;

/** Who holds what in IPAM: address (without prefix length) → endpoint id. */
async function holders(): Promise<Map<string, string>> {
  return new Map((await allocations()).map((allocation) => [allocation.address.split("/")[0]!, allocation.endpointId]));
}

/** Each test starts from an empty network. */
async function detachAll(): Promise<void> {
  const { endpoints } = await callUnary(plane.control.listEndpoints.bind(plane.control), { network: "tk_net", pageToken: "", pageSize: 0 });
  for (const { container } of endpoints) await detach(container);
}

beforeAll(async () => {
  plane = await startControlPlane();
  ipam = new IpamClient(plane.ipam.address, insecure(), clientOptions);
  await plane.registerHost("h1", "192.168.1.11");
  await plane.registerHost("h2", "192.168.1.12");
  // A /29: five addresses for containers (.2 to .6), the gateway .1.
  network = await callUnary(plane.control.createNetwork.bind(plane.control), {
    intentId: "",
    spec: NetworkSpec.fromPartial({ name: "tk_net", driver: "ipvlan", subnets: ["10.91.0.0/29"], options: { parent: "eth0" } }),
  });
});

afterEach(detachAll);

afterAll(async () => {
  ipam?.close();
  await plane?.stop();
});

describe("attach with take_over", () => {
  it("gives the container the holder's address in one step, while automatic attaches find none free", async () => {
    const holder = await attach({ container: "holder", ipv4: "10.91.0.6", ipamOnly: true });
    // Every other address taken: an automatic attach could only get the holder's, if it were ever free.
    for (let n = 0; ; n++) {
      const filled = await attach({ container: `fill${n}` }).catch((error: { code: number }) => error);
      if ("code" in filled && filled.code === status.RESOURCE_EXHAUSTED) break;
      expect(filled).toHaveProperty("addresses");
    }
    const before = await holders();
    expect(before.get("10.91.0.6")).toBe(holder.id);

    const ipamBucket = await openBucket(plane.nc, Buckets.ipam);
    const removals: string[] = [];
    const watch = await ipamBucket.watch({ key: ">", include: KvWatchInclude.UpdatesOnly });
    void (async () => {
      for await (const entry of watch) if (entry.operation !== "PUT") removals.push(entry.key);
    })();
    const racers = Array.from({ length: 8 }, (_, n) => attach({ container: `racer${n}` }).then(
      (endpoint) => `got ${endpoint.addresses.join(",")}`,
      (error: { code: number; details: string }) => `${error.code} ${error.details}`,
    ));
    const [endpoint, ...raced] = await Promise.all([attach({ container: "web", ipv4: "10.91.0.6", netnsPath: NETNS, takeOver: "holder" }), ...racers]);
    watch.stop();

    expect(endpoint).toMatchObject({ id: holder.id, container: "web", host: "h1", netns: NETNS, ifname: "eth0", addresses: ["10.91.0.6/29"] });
    expect(endpoint.ipamOnly).toBeFalsy();
    for (const outcome of raced) expect(outcome).toMatch(new RegExp(`^${status.RESOURCE_EXHAUSTED} `));
    expect(removals).toEqual([]);
    expect(await holders()).toEqual(before);
    // The holder is gone; its host's desired key is the container's now, and its name is the container's.
    await expect(inspect("holder")).rejects.toMatchObject({ code: status.NOT_FOUND });
    expect(await inspect("web")).toMatchObject({ id: holder.id, addresses: ["10.91.0.6/29"] });
    const desired = await getValue(await openBucket(plane.nc, Buckets.desired), codecOf(Endpoint), desiredKey("h1", holder.id));
    expect(desired?.value).toMatchObject({ container: "web", netns: NETNS });
    const names = await openBucket(plane.nc, Buckets.names);
    expect((await names.get(nameKey(network.id, "holder")))?.operation ?? "DEL").not.toBe("PUT");
    expect((await names.get(nameKey(network.id, "web")))?.operation).toBe("PUT");

    // The planner names the new holder of the address.
    await expect(attach({ container: "other", ipv4: "10.91.0.6" })).rejects.toMatchObject({
      code: status.ALREADY_EXISTS,
      details: "--ip 10.91.0.6 is already in use by container web on network tk_net; choose another address, or leave --ip out to get a free one",
    });

    // A detach of the container frees the address, as any other's.
    await detach("web");
    expect((await holders()).has("10.91.0.6")).toBe(false);
    expect((await attach({ container: "again" })).addresses).toEqual(["10.91.0.6/29"]);
  });

  it("answers a replay of the same intent with the same endpoint", async () => {
    await attach({ container: "h-replay", ipamOnly: true });
    const first = await attach({ container: "c-replay", netnsPath: NETNS, takeOver: "h-replay" }, "intent-take-over-1");
    const again = await attach({ container: "c-replay", netnsPath: NETNS, takeOver: "h-replay" }, "intent-take-over-1");
    expect(again).toEqual(first);
  });

  it("a replay of a take-over that stopped after writing the endpoint (the holder still there) removes the holder", async () => {
    const holder = await attach({ container: "h-crash", ipamOnly: true });
    const endpoints = await openBucket(plane.nc, Buckets.endpoints);
    const holderRecord = (await endpoints.get("h-crash"))!.value;
    const first = await attach({ container: "c-crash", netnsPath: NETNS, takeOver: "h-crash" }, "intent-take-over-crash");
    // What a planner stopped between its two writes leaves: the holder's record, and no outcome of the intent.
    await endpoints.put("h-crash", holderRecord);
    await (await openBucket(plane.nc, Buckets.intents)).purge("intent-take-over-crash");
    await eventually("the planner's view of the holder again", () => inspect("h-crash").catch(() => undefined), (found) => found !== undefined);

    const again = await attach({ container: "c-crash", netnsPath: NETNS, takeOver: "h-crash" }, "intent-take-over-crash");

    expect(again).toEqual(first);
    await expect(inspect("h-crash")).rejects.toMatchObject({ code: status.NOT_FOUND });
    expect((await holders()).get(first.addresses[0]!.split("/")[0]!)).toBe(holder.id);
  });

  it("refuses what cannot be taken over, saying why, and changes nothing", async () => {
    await attach({ container: "h-ok", ipv4: "10.91.0.3", ipamOnly: true });
    await attach({ container: "linked", ipv4: "10.91.0.4", netnsPath: NETNS });
    await attach({ container: "h-other-host", ipv4: "10.91.0.5", host: "h2", ipamOnly: true });
    const before = await holders();
    const cases: [Partial<EndpointSpec>, number, string][] = [
      [{ takeOver: "nosuch" }, status.NOT_FOUND, "no container nosuch to take the addresses of on network tk_net (see trellis ps --net=tk_net); attach without take_over"],
      [{ takeOver: "linked" }, status.FAILED_PRECONDITION, "container linked (network tk_net on host h1) has a link of its own: only an IPAM-only container's addresses can be taken over"],
      [
        { takeOver: "h-other-host" },
        status.FAILED_PRECONDITION,
        "container h-other-host is on network tk_net on host h2, not tk_net on host h1: only an IPAM-only container of the same network and host can be taken over",
      ],
      [
        { takeOver: "h-ok", ipv4: "10.91.0.2" },
        status.FAILED_PRECONDITION,
        "--ip 10.91.0.2 is not an address of h-ok (10.91.0.3): take over gives its addresses as they are; leave --ip out, or give one of them",
      ],
      [{ takeOver: "h-ok", ipamOnly: true }, status.INVALID_ARGUMENT, "invalid attach: take_over h-ok gives c-bad the addresses of an IPAM-only container for a link, so it cannot be IPAM-only itself"],
    ];
    for (const [spec, code, details] of cases) {
      await expect(attach({ container: "c-bad", netnsPath: NETNS, ...spec })).rejects.toMatchObject({ code, details });
    }
    expect(await holders()).toEqual(before);
    await expect(inspect("c-bad")).rejects.toMatchObject({ code: status.NOT_FOUND });
    expect(await inspect("h-ok")).toMatchObject({ ipamOnly: true, addresses: ["10.91.0.3/29"] });
  });
});
