import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { openBucket } from "../../libs/bus/connection.js";
import { Buckets, statusKey } from "../../libs/bus/subjects.js";
import { callUnary } from "../../libs/grpc/unary.js";
import { NetworkSpec, type Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { eventually } from "../support/eventually.js";
import { runTrellis } from "../support/trellis-cli.js";

// `trellis status` against a real planner and IPAM on a real NATS: hosts by their heartbeats (written as their
// agents write them), a network with containers, their states as their agents report them in the status bucket.

let plane: ControlPlane;
const endpoints: Endpoint[] = [];
const UNREACHABLE_PLANNER = "127.0.0.1:1";

const call = <Req, Res>(method: (plane: ControlPlane) => Parameters<typeof callUnary<Req, Res>>[0], request: Req) => callUnary(method(plane), request);

beforeAll(async () => {
  plane = await startControlPlane();
  await plane.registerHost("h1", "192.0.2.11", { interfaces: ["eth0"] });
  await plane.registerHost("h2", "192.0.2.12", { interfaces: ["eth0"], missingLinkKinds: ["vlan"] });
  await plane.registerHost("h3", "192.0.2.13", { interfaces: ["eth0"], heartbeatAt: new Date(Date.now() - 3_600_000).toISOString() });
  const spec = NetworkSpec.fromPartial({ name: "web", driver: "ipvlan", subnets: ["10.9.0.0/24"], options: { parent: "eth0" } });
  await call((p) => p.control.createNetwork.bind(p.control), { intentId: "", spec });
  for (const [container, host] of [["c1", "h1"], ["c2", "h1"], ["c3", "h2"]] as const) {
    endpoints.push(await call((p) => p.control.attachEndpoint.bind(p.control), { intentId: "", spec: { network: "web", container, host, ipv4: "", ipv6: "" } }));
  }
  const statuses = await openBucket(plane.nc, Buckets.status);
  const report = (endpoint: Endpoint, state: EndpointState) =>
    statuses.put(statusKey(endpoint.host, endpoint.id), codecOf(EndpointStatus).encode(EndpointStatus.fromPartial({ endpointId: endpoint.id, host: endpoint.host, container: endpoint.container, state })));
  await report(endpoints[0]!, EndpointState.ENDPOINT_STATE_READY);
  await report(endpoints[1]!, EndpointState.ENDPOINT_STATE_READY);
  await report(endpoints[2]!, EndpointState.ENDPOINT_STATE_FAILED);
});

afterAll(async () => {
  await plane.stop();
});

const status = (...args: string[]) => runTrellis({ TRELLIS_PLANNER_ADDR: `${plane.planner.address},${UNREACHABLE_PLANNER}` }, "status", ...args);

describe("trellis status", () => {
  it("shows hosts, each network's pool use, containers by state and every planner replica, as JSON", async () => {
    // The planner learns the states through its follow of the status bucket: soon, not at once.
    const answer: any = await eventually(
      "the agents' reported states in trellis status",
      async () => JSON.parse((await status("--json")).stdout),
      (parsed) => JSON.stringify(parsed.containers) === JSON.stringify({ placed: 3, ready: 2, pending: 0, failed: 1 }),
    );
    expect(answer.hosts.map(({ host, live, missingLinkKinds }: { host: string; live: boolean; missingLinkKinds: string[] }) => ({ host, live, missingLinkKinds }))).toEqual([
      { host: "h1", live: true, missingLinkKinds: [] },
      { host: "h2", live: true, missingLinkKinds: ["vlan"] },
      { host: "h3", live: false, missingLinkKinds: [] },
    ]);
    expect(answer.hosts[2].heartbeatAgeMs).toBeGreaterThanOrEqual(3_600_000);
    // The gateway and three containers of 254 usable addresses.
    expect(answer.networks).toEqual([
      { name: "web", mode: "l2", parent: "eth0", subnets: [{ cidr: "10.9.0.0/24", used: 4, usable: 254 }], containers: { placed: 3, ready: 2, pending: 0, failed: 1 } },
    ]);
    expect(answer.planners[0]).toEqual({ address: plane.planner.address, state: "serving", networks: 1, containers: 3 });
    expect(answer.planners[1].address).toBe(UNREACHABLE_PLANNER);
    expect(answer.planners[1].state).toMatch(/^not answering: /);
  });

  it("prints the same as tables in the style of trellis network ls", async () => {
    const result = await status();
    expect(result.code).toBe(0);
    const lines = result.stdout.split("\n");
    expect(lines.slice(0, 2)).toEqual(["HOSTS", expect.stringMatching(/^HOST +ROLE +STATE +HEARTBEAT +MISSING LINK KINDS$/)]);
    expect(lines).toContainEqual(expect.stringMatching(/^h2 +host +live +\d+\.\ds ago +vlan$/));
    expect(lines).toContainEqual(expect.stringMatching(/^h3 +host +stale +\d+\.\ds ago +-$/));
    expect(lines).toContainEqual(expect.stringMatching(/^web +l2 +eth0 +10\.9\.0\.0\/24 +4\/254 \(1\.6%\)$/));
    expect(lines).toContainEqual(expect.stringMatching(/^web +3 +2 +0 +1$/));
    expect(lines).toContainEqual(expect.stringMatching(/^\(all\) +3 +2 +0 +1$/));
    expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${plane.planner.address.replace(/\./g, "\\.")} +serving +1 +3$`)));
  });

  it("hands out hosts a page at a time, in name order", async () => {
    const page = (hostPageToken: string) => call((p) => p.control.getClusterStatus.bind(p.control), { hostPageToken, hostPageSize: 2 });
    const first = await page("");
    expect([first.hosts.map((h) => h.host), first.nextHostPageToken]).toEqual([["h1", "h2"], "h2"]);
    const second = await page(first.nextHostPageToken);
    expect([second.hosts.map((h) => h.host), second.nextHostPageToken]).toEqual([["h3"], ""]);
  });

  it("counts a container that goes, and its address", async () => {
    await call((p) => p.control.detachEndpoint.bind(p.control), { intentId: "", container: "c2" });
    const answer = await eventually(
      "the detach in trellis status",
      async () => JSON.parse((await status("--json")).stdout),
      (parsed) => parsed.networks[0].containers.placed === 2,
    );
    expect(answer.networks[0].subnets[0]).toEqual({ cidr: "10.9.0.0/24", used: 3, usable: 254 });
  });
});
