import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ControlApi } from "../../libs/control-client/index.js";
import { startDockerPlugin, type RunningDockerPlugin } from "../../services/docker-plugin/main.js";
import { startControlPlane, type ControlPlane } from "../support/control-plane.js";
import { eventually } from "../support/eventually.js";

// Contract tests of `trellis docker-plugin` on its unix socket, with the request bodies dockerd (libnetwork's
// drivers/remote and ipams/remote) sends, against a real control plane (nats-server, IPAM, planner). Two plugins
// stand for the plugins of two hosts, h1 and h2. Joins that make links need ipvlan: test/lab/docker.test.ts.

const work = mkdtempSync(join(tmpdir(), "trellis-docker-"));
let plane: ControlPlane;
let control: ControlApi;
const plugins: Record<string, RunningDockerPlugin> = {};
const logs: Record<string, string[]> = { h1: [], h2: [] };
/** Namespaces made here stand for Docker's sandboxes once the runtime has bind-mounted them. */
const SANDBOXES = [`trtest-dk1-${process.pid}`, `trtest-dk2-${process.pid}`];

const H1_NET = "a".repeat(64);
const H2_NET = "b".repeat(64);
const GATEWAY_OPTIONS = { RequestAddressType: "com.docker.network.gateway" };

function socketOf(host: string): string {
  return join(work, host, "trellis.sock");
}

/**
 * What each host's dockerd says of its networks' containers at GET /networks/ID (Docker 20.10's answer, cut to
 * the fields the plugin reads): network id → container id → name and endpoint. The plugin asks once a sandbox exists.
 */
const dockerContainers: Record<string, Record<string, Record<string, { Name: string; EndpointID: string }>>> = { h1: {}, h2: {} };
const dockerds: Server[] = [];

async function startDockerApi(host: string): Promise<string> {
  const socket = join(work, host, "docker.sock");
  const server = createServer((req, res) => {
    const networkId = /^\/networks\/([0-9a-f]+)$/.exec(req.url ?? "")?.[1] ?? "";
    res.setHeader("Content-Type", "application/json");
    res.end(JSON.stringify({ Name: networkId.slice(0, 12), Id: networkId, Driver: "trellis", Containers: dockerContainers[host]![networkId] ?? {} }));
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  dockerds.push(server);
  return socket;
}

async function startPlugin(host: string, dockerSocket?: string): Promise<void> {
  const log = (line: string) => void logs[host]!.push(line);
  plugins[host] = await startDockerPlugin({ socket: socketOf(host), dataDir: join(work, host, "data"), host, planner: plane.planner.address, nats: plane.nats.url, dockerSocket: dockerSocket ?? join(work, host, "docker.sock"), log });
}

interface Answer {
  status: number;
  contentType: string;
  body: Record<string, any>;
}

/** A call as Docker's plugin client makes it: POST, JSON body (null for Activate), on the plugin's socket. */
function call(host: string, method: string, body: unknown): Promise<Answer> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socketOf(host), path: method, method: "POST", headers: { Accept: "application/vnd.docker.plugins.v1.2+json", "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) } },
      (res) => {
        let data = "";
        res.on("data", (chunk: Buffer) => (data += chunk.toString()));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, contentType: String(res.headers["content-type"]), body: JSON.parse(data) as Record<string, any> }));
      },
    );
    req.on("error", reject);
    req.end(text);
  });
}

async function ok(host: string, method: string, body: unknown): Promise<Record<string, any>> {
  const answer = await call(host, method, body);
  expect(answer.status).toBe(200);
  expect(answer.body.Err ?? answer.body.Error ?? "").toBe("");
  return answer.body;
}

function pool(cidr: string, extra: Record<string, unknown> = {}) {
  return { AddressSpace: "trellis-local", Pool: cidr, SubPool: "", Options: {}, V6: cidr.includes(":"), ...extra };
}

function createNetworkBody(networkId: string, generic: Record<string, string>, ipv4: { pool: string; gateway: string }[], extra: Record<string, unknown> = {}) {
  return {
    NetworkID: networkId,
    Options: { "com.docker.network.enable_ipv6": false, "com.docker.network.generic": generic },
    IPv4Data: ipv4.map((data) => ({ AddressSpace: "trellis-local", Pool: data.pool, Gateway: data.gateway, AuxAddresses: {} })),
    IPv6Data: [],
    ...extra,
  };
}

async function endpointsOf(network: string): Promise<{ container: string; host: string; addresses: string[]; ipamOnly: boolean }[]> {
  return (await control.listEndpoints(network)).map((e) => ({ container: e.container, host: e.host, addresses: e.addresses, ipamOnly: e.ipamOnly ?? false }));
}

beforeAll(async () => {
  for (const name of SANDBOXES) execFileSync("ip", ["netns", "add", name]);
  plane = await startControlPlane();
  // A day's heartbeat interval: the hosts stay live for the test. h1 reports no ipvlan (this kernel has none).
  await plane.registerHost("h1", "127.0.0.1", { heartbeatIntervalMs: 86_400_000, missingLinkKinds: ["ipvlan"] });
  await plane.registerHost("h2", "127.0.0.1", { heartbeatIntervalMs: 86_400_000 });
  control = new ControlApi({ addresses: plane.planner.address });
  for (const host of ["h1", "h2"]) {
    execFileSync("mkdir", ["-p", join(work, host)]);
    await startPlugin(host, await startDockerApi(host));
  }
}, 60_000);

afterAll(async () => {
  for (const plugin of Object.values(plugins)) await plugin.stop();
  control?.close();
  for (const server of dockerds) server.close();
  await plane?.stop();
  for (const name of SANDBOXES) spawnSync("ip", ["netns", "del", name], { stdio: "ignore" });
  rmSync(work, { recursive: true, force: true });
}, 30_000);

describe("handshake", () => {
  it("activates as a NetworkDriver and an IpamDriver, with Docker's content type", async () => {
    const answer = await call("h1", "/Plugin.Activate", null);
    expect(answer).toMatchObject({ status: 200, body: { Implements: ["NetworkDriver", "IpamDriver"] } });
    expect(answer.contentType).toBe("application/vnd.docker.plugins.v1.2+json");
  });

  it("is a local-scoped driver of global connectivity, and an IPAM that needs no replay", async () => {
    expect(await ok("h1", "/NetworkDriver.GetCapabilities", null)).toEqual({ Scope: "local", ConnectivityScope: "global" });
    expect(await ok("h1", "/IpamDriver.GetCapabilities", null)).toEqual({ RequiresMACAddress: false, RequiresRequestReplay: false });
    expect(await ok("h1", "/IpamDriver.GetDefaultAddressSpaces", null)).toEqual({ LocalDefaultAddressSpace: "trellis-local", GlobalDefaultAddressSpace: "trellis-global" });
  });

  it("answers an unknown call with 404 and Err, and a body that is not JSON with Err", async () => {
    const unknown = await call("h1", "/VolumeDriver.Create", {});
    expect(unknown.status).toBe(404);
    expect(unknown.body.Err).toMatch(/^unknown plugin call \/VolumeDriver\.Create: this plugin implements \/Plugin\.Activate, /);
  });
});

describe("a network on two hosts", () => {
  it("refuses a pool without --subnet, in IPAM's Error field", async () => {
    const answer = await ok2("h1", "/IpamDriver.RequestPool", pool(""));
    expect(answer).toEqual({ Error: "Trellis needs the subnet of a Docker network: give --subnet (the same on every host that joins the network), e.g. --subnet=192.168.20.0/24" });
  });

  it("refuses a subnet with host bits, and an --ip-range outside it, saying what would be right", async () => {
    expect((await ok2("h1", "/IpamDriver.RequestPool", pool("10.78.0.1/24"))).Error).toBe('invalid --subnet "10.78.0.1/24": host bits set, did you mean 10.78.0.0/24?');
    expect((await ok2("h1", "/IpamDriver.RequestPool", pool("10.78.0.0/24", { SubPool: "10.79.0.0/25" }))).Error).toBe("invalid --ip-range 10.79.0.0/25: it must lie inside --subnet 10.78.0.0/24");
  });

  it("gives the pool its subnet as id, in CIDR form, the same when asked again", async () => {
    for (let i = 0; i < 2; i++) expect(await ok("h1", "/IpamDriver.RequestPool", pool("10.78.0.0/24"))).toEqual({ PoolID: "10.78.0.0/24", Pool: "10.78.0.0/24", Data: {} });
  });

  it("answers Docker's gateway request with the subnet's first address, or the one given, in CIDR form, every time", async () => {
    const asked = { PoolID: "10.78.0.0/24", Address: "", Options: GATEWAY_OPTIONS };
    expect(await ok("h1", "/IpamDriver.RequestAddress", asked)).toEqual({ Address: "10.78.0.1/24", Data: {} });
    expect(await ok("h1", "/IpamDriver.RequestAddress", asked)).toEqual({ Address: "10.78.0.1/24", Data: {} });
    expect(await ok("h1", "/IpamDriver.RequestAddress", { ...asked, Address: "10.78.0.1" })).toEqual({ Address: "10.78.0.1/24", Data: {} });
  });

  it("refuses a network whose addresses come from another IPAM, in the driver's Err field", async () => {
    const body = createNetworkBody(H1_NET, {}, [{ pool: "172.18.0.0/16", gateway: "172.18.0.1/16" }]);
    body.IPv4Data[0]!.AddressSpace = "LocalDefault";
    const answer = await call("h1", "/NetworkDriver.CreateNetwork", body);
    expect(answer.body.Err).toMatch(/pool 172\.18\.0\.0\/16 comes from address space "LocalDefault": add --ipam-driver=trellis/);
    expect(answer.body.Error).toBeUndefined();
  });

  it("says the planner's own error for a bad option, and creates nothing", async () => {
    const answer = await call("h1", "/NetworkDriver.CreateNetwork", createNetworkBody(H1_NET, { "trellis.network": "dk_l2", ipvlan_mode: "l4" }, [{ pool: "10.78.0.0/24", gateway: "10.78.0.1/24" }]));
    expect(answer.body).toEqual({ Err: 'Trellis refused: invalid ipvlan_mode "l4": must be one of l2, l3, l3s' });
    await expect(control.inspectNetwork("dk_l2")).rejects.toThrow(/not found/);
  });

  it("creates the Trellis network named by -o trellis.network", async () => {
    expect(await ok("h1", "/NetworkDriver.CreateNetwork", createNetworkBody(H1_NET, { "trellis.network": "dk_l2", ipvlan_mode: "l2" }, [{ pool: "10.78.0.0/24", gateway: "10.78.0.1/24" }]))).toEqual({});
    const network = await control.inspectNetwork("dk_l2");
    expect(network).toMatchObject({ mode: "l2", flag: "bridge", subnets: [{ cidr: "10.78.0.0/24", gateway: "10.78.0.1" }] });
  });

  it("joins it from a second host's docker network create with the same options, and from a repeat", async () => {
    const before = (await control.inspectNetwork("dk_l2")).id;
    await ok("h2", "/IpamDriver.RequestPool", pool("10.78.0.0/24"));
    expect(await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: GATEWAY_OPTIONS })).toEqual({ Address: "10.78.0.1/24", Data: {} });
    const body = createNetworkBody(H2_NET, { "trellis.network": "dk_l2" }, [{ pool: "10.78.0.0/24", gateway: "10.78.0.1/24" }]);
    expect(await ok("h2", "/NetworkDriver.CreateNetwork", body)).toEqual({});
    expect(await ok("h2", "/NetworkDriver.CreateNetwork", body)).toEqual({});
    expect((await control.inspectNetwork("dk_l2")).id).toBe(before);
  });

  it("refuses another subnet or mode for the same name, saying what the network is", async () => {
    await ok("h2", "/IpamDriver.RequestPool", pool("10.79.0.0/24"));
    const subnet = await call("h2", "/NetworkDriver.CreateNetwork", createNetworkBody("c".repeat(64), { "trellis.network": "dk_l2" }, [{ pool: "10.79.0.0/24", gateway: "10.79.0.1/24" }]));
    expect(subnet.body.Err).toBe(
      "Trellis network dk_l2 already exists with subnets 10.78.0.0/24, not 10.79.0.0/24; gateway 10.78.0.1, not 10.79.0.1: to join it, give the same options (--subnet=10.78.0.0/24 --gateway=10.78.0.1 -o ipvlan_mode=l2 -o ipvlan_flag=bridge), or name another network with -o trellis.network=NAME",
    );
    const mode = await call("h2", "/NetworkDriver.CreateNetwork", createNetworkBody("c".repeat(64), { "trellis.network": "dk_l2", ipvlan_mode: "l3" }, [{ pool: "10.78.0.0/24", gateway: "10.78.0.1/24" }]));
    expect(mode.body.Err).toMatch(/^Trellis network dk_l2 already exists with ipvlan_mode=l2, not l3: to join it/);
    await ok("h2", "/IpamDriver.ReleasePool", { PoolID: "10.79.0.0/24" });
  });
});

/** Answers with a refusal: still status 200, as Docker reads refusals from the body. */
async function ok2(host: string, method: string, body: unknown): Promise<Record<string, any>> {
  const answer = await call(host, method, body);
  expect(answer.status).toBe(200);
  return answer.body;
}

describe("a container's addresses", () => {
  const endpointId = "e".repeat(64);

  it("hands out an address held in Trellis by this host, in CIDR form", async () => {
    expect(await ok("h1", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} })).toEqual({ Address: "10.78.0.2/24", Data: {} });
    expect(await endpointsOf("dk_l2")).toEqual([expect.objectContaining({ host: "h1", addresses: ["10.78.0.2/24"], ipamOnly: true })]);
  });

  it("refuses an address in use (--ip), naming its holder, and one outside the subnet", async () => {
    const taken = await ok2("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.2", Options: {} });
    expect(taken.Error).toMatch(/^Trellis refused: --ip 10\.78\.0\.2 is already in use by container docker-ipam-[0-9a-f]{12} on network dk_l2; choose another address/);
    const outside = await ok2("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "10.79.0.5", Options: {} });
    expect(outside.Error).toBe("address 10.79.0.5 is not in the network's subnet 10.78.0.0/24");
    expect(await endpointsOf("dk_l2")).toHaveLength(1);
  });

  it("creates an endpoint with Docker's interface as it is", async () => {
    const body = { NetworkID: H1_NET, EndpointID: endpointId, Interface: { Address: "10.78.0.2/24", AddressIPv6: "", MacAddress: "" }, Options: { "com.docker.network.endpoint.exposedports": [], "com.docker.network.portmap": [] } };
    expect(await ok("h1", "/NetworkDriver.CreateEndpoint", body)).toEqual({});
    expect(await ok("h1", "/NetworkDriver.EndpointOperInfo", { NetworkID: H1_NET, EndpointID: endpointId })).toEqual({ Value: {} });
  });

  it("refuses an endpoint whose address Trellis did not hand out", async () => {
    const body = { NetworkID: H1_NET, EndpointID: "f".repeat(64), Interface: { Address: "10.78.0.99/24", AddressIPv6: "", MacAddress: "" }, Options: {} };
    expect((await call("h1", "/NetworkDriver.CreateEndpoint", body)).body.Err).toBe("address 10.78.0.99/24 was not handed out by Trellis on this host: create the network with --ipam-driver=trellis");
  });

  it("Join answers at once, before Docker's sandbox has a namespace; the address stays with its IPAM-only holder", async () => {
    const answer = await call("h1", "/NetworkDriver.Join", { NetworkID: H1_NET, EndpointID: endpointId, SandboxKey: join(work, "netns", "0123456789ab"), Options: {} });
    expect(answer.body).toEqual({ DisableGatewayService: true });
    expect(await endpointsOf("dk_l2")).toEqual([expect.objectContaining({ host: "h1", addresses: ["10.78.0.2/24"], ipamOnly: true })]);
  });

  it("Leave, DeleteEndpoint and ReleaseAddress free the address, and each again changes nothing", async () => {
    for (let i = 0; i < 2; i++) {
      expect(await ok("h1", "/NetworkDriver.Leave", { NetworkID: H1_NET, EndpointID: endpointId })).toEqual({});
      expect(await ok("h1", "/NetworkDriver.DeleteEndpoint", { NetworkID: H1_NET, EndpointID: endpointId })).toEqual({});
      expect(await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.2" })).toEqual({});
    }
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("refuses a second Trellis network's Join into a sandbox that has one (docker network connect), in Err, and takes it once the first has left", async () => {
    const sandbox = join(work, "netns", "one-container");
    const [first, second] = ["7".repeat(64), "8".repeat(64)];
    const addresses: string[] = [];
    for (const id of [first, second]) {
      const { Address } = await ok("h1", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
      addresses.push(Address);
      await ok("h1", "/NetworkDriver.CreateEndpoint", { NetworkID: H1_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
    }
    await ok("h1", "/NetworkDriver.Join", { NetworkID: H1_NET, EndpointID: first, SandboxKey: sandbox, Options: {} });
    const refused = await call("h1", "/NetworkDriver.Join", { NetworkID: H1_NET, EndpointID: second, SandboxKey: sandbox, Options: {} });
    expect(refused.body.Err).toBe(
      "failed to join: the container is on Trellis network dk_l2 already (Docker endpoint 777777777777), and a container has one Trellis network for now: disconnect it from that network first, or connect this one through another driver",
    );
    await ok("h1", "/NetworkDriver.Leave", { NetworkID: H1_NET, EndpointID: first });
    await ok("h1", "/NetworkDriver.Join", { NetworkID: H1_NET, EndpointID: second, SandboxKey: sandbox, Options: {} });
    for (const [index, id] of [first, second].entries()) {
      await ok("h1", "/NetworkDriver.Leave", { NetworkID: H1_NET, EndpointID: id });
      await ok("h1", "/NetworkDriver.DeleteEndpoint", { NetworkID: H1_NET, EndpointID: id });
      await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: addresses[index]!.split("/")[0] });
    }
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("once the sandbox has its namespace, an attach the planner refuses leaves the address with its holder, and says why", async () => {
    const id = "1".repeat(64);
    const { Address } = await ok("h1", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
    await ok("h1", "/NetworkDriver.CreateEndpoint", { NetworkID: H1_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
    await ok("h1", "/NetworkDriver.Join", { NetworkID: H1_NET, EndpointID: id, SandboxKey: `/run/netns/${SANDBOXES[0]}`, Options: {} });
    const refusal = await eventually(
      "the plugin's report of the refused attach",
      () => logs.h1!.find((line) => line.startsWith("failed to attach Docker endpoint 111111111111 (docker-111111111111): Trellis refused: ")),
      (line) => line !== undefined,
    );
    expect(refusal).toMatch(/h1/);
    expect(await endpointsOf("dk_l2")).toEqual([expect.objectContaining({ host: "h1", addresses: [Address], ipamOnly: true })]);
    await ok("h1", "/NetworkDriver.Leave", { NetworkID: H1_NET, EndpointID: id });
    await ok("h1", "/NetworkDriver.DeleteEndpoint", { NetworkID: H1_NET, EndpointID: id });
    await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: Address.split("/")[0] });
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("hands the address over to the container's own endpoint in the sandbox in one attach (take_over), the same address", async () => {
    const id = "2".repeat(64);
    const { Address } = await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.9", Options: {} });
    await ok("h2", "/NetworkDriver.CreateEndpoint", { NetworkID: H2_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
    await ok("h2", "/NetworkDriver.Join", { NetworkID: H2_NET, EndpointID: id, SandboxKey: `/run/netns/${SANDBOXES[1]}`, Options: {} });
    await eventually("the container's own endpoint", () => endpointsOf("dk_l2"), (list) => list.length === 1 && list[0]!.container === "docker-222222222222" && !list[0]!.ipamOnly);
    const attached = await control.inspectEndpoint("docker-222222222222");
    expect(attached).toMatchObject({ host: "h2", addresses: ["10.78.0.9/24"], netns: `/run/netns/${SANDBOXES[1]}`, ifname: "eth0" });
    expect(await endpointsOf("dk_l2")).toHaveLength(1);
    expect(await ok("h2", "/NetworkDriver.Leave", { NetworkID: H2_NET, EndpointID: id })).toEqual({});
    expect(await endpointsOf("dk_l2")).toEqual([]);
    await ok("h2", "/NetworkDriver.DeleteEndpoint", { NetworkID: H2_NET, EndpointID: id });
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.9" });
  });

  it("names the container's endpoint as dockerd names the container, asking it once the sandbox exists", async () => {
    const id = "3".repeat(64);
    dockerContainers.h2![H2_NET] = { ["c".repeat(64)]: { Name: "web", EndpointID: id } };
    const { Address } = await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
    await ok("h2", "/NetworkDriver.CreateEndpoint", { NetworkID: H2_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
    await ok("h2", "/NetworkDriver.Join", { NetworkID: H2_NET, EndpointID: id, SandboxKey: `/run/netns/${SANDBOXES[1]}`, Options: {} });
    await eventually("the endpoint named web", () => endpointsOf("dk_l2"), (list) => list.length === 1 && list[0]!.container === "web" && !list[0]!.ipamOnly);
    expect(await control.inspectEndpoint("web")).toMatchObject({ host: "h2", addresses: [Address], netns: `/run/netns/${SANDBOXES[1]}` });
    await ok("h2", "/NetworkDriver.Leave", { NetworkID: H2_NET, EndpointID: id });
    expect(await endpointsOf("dk_l2")).toEqual([]);
    await ok("h2", "/NetworkDriver.DeleteEndpoint", { NetworkID: H2_NET, EndpointID: id });
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: Address.split("/")[0] });
    delete dockerContainers.h2![H2_NET];
  });

  it("keeps docker-<endpoint id> when another host's container has the Docker name already, and says so", async () => {
    const id = "4".repeat(64);
    // Another host's container named db (held there as IPAM-only: h1 has no ipvlan in this kernel).
    await control.attachEndpoint({ network: "dk_l2", container: "db", host: "h1", ipamOnly: true, ipv4: "", ipv6: "" });
    dockerContainers.h2![H2_NET] = { ["d".repeat(64)]: { Name: "db", EndpointID: id } };
    const { Address } = await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
    await ok("h2", "/NetworkDriver.CreateEndpoint", { NetworkID: H2_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
    await ok("h2", "/NetworkDriver.Join", { NetworkID: H2_NET, EndpointID: id, SandboxKey: `/run/netns/${SANDBOXES[1]}`, Options: {} });
    await eventually("the endpoint docker-444444444444", () => endpointsOf("dk_l2"), (list) => list.some((e) => e.container === "docker-444444444444" && !e.ipamOnly));
    expect(logs.h2).toContain(
      'Docker container db is docker-444444444444 in Trellis, and resolves by that name only: Trellis refused: container name "db" is already in use (network dk_l2, host h1); remove it first (trellis rm db) or choose another name',
    );
    expect(await control.inspectEndpoint("docker-444444444444")).toMatchObject({ host: "h2", addresses: [Address] });
    await ok("h2", "/NetworkDriver.Leave", { NetworkID: H2_NET, EndpointID: id });
    await ok("h2", "/NetworkDriver.DeleteEndpoint", { NetworkID: H2_NET, EndpointID: id });
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: Address.split("/")[0] });
    await control.detachEndpoint("db");
    delete dockerContainers.h2![H2_NET];
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("keeps docker-<endpoint id> when dockerd cannot be asked, and says why", async () => {
    const id = "5".repeat(64);
    await plugins.h2!.stop();
    await startPlugin("h2", join(work, "no-dockerd.sock"));
    const { Address } = await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
    await ok("h2", "/NetworkDriver.CreateEndpoint", { NetworkID: H2_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
    await ok("h2", "/NetworkDriver.Join", { NetworkID: H2_NET, EndpointID: id, SandboxKey: `/run/netns/${SANDBOXES[1]}`, Options: {} });
    await eventually("the endpoint docker-555555555555", () => endpointsOf("dk_l2"), (list) => list.some((e) => e.container === "docker-555555555555" && !e.ipamOnly));
    expect(logs.h2!.find((line) => line.startsWith("Docker endpoint 555555555555 stays docker-555555555555 in Trellis: "))).toMatch(
      /: failed to ask dockerd on \S+no-dockerd\.sock for the container's name: connect ENOENT \S+ \(give --docker-socket=PATH\)$/,
    );
    await ok("h2", "/NetworkDriver.Leave", { NetworkID: H2_NET, EndpointID: id });
    await ok("h2", "/NetworkDriver.DeleteEndpoint", { NetworkID: H2_NET, EndpointID: id });
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: Address.split("/")[0] });
    await plugins.h2!.stop();
    await startPlugin("h2");
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("gives an --ip again after its release, every time", async () => {
    for (let i = 0; i < 3; i++) {
      expect(await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.7", Options: {} })).toEqual({ Address: "10.78.0.7/24", Data: {} });
      expect(await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.7" })).toEqual({});
    }
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("releasing the gateway releases nothing: the network keeps it", async () => {
    expect(await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.1" })).toEqual({});
    expect((await control.inspectNetwork("dk_l2")).subnets[0]!.gateway).toBe("10.78.0.1");
  });
});

/**
 * An address, an endpoint and a Join on h2, with Docker's sandbox file as it is before the runtime's prestart hook
 * bind-mounts the namespace on it: the join waits.
 */
async function joinBeforeSandbox(id: string): Promise<{ Address: string; sandbox: string }> {
  const sandbox = join(work, "exec", "netns", id.slice(0, 12));
  execFileSync("mkdir", ["-p", join(work, "exec", "netns")]);
  execFileSync("touch", [sandbox]);
  const { Address } = await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
  await ok("h2", "/NetworkDriver.CreateEndpoint", { NetworkID: H2_NET, EndpointID: id, Interface: { Address, AddressIPv6: "", MacAddress: "" }, Options: {} });
  await ok("h2", "/NetworkDriver.Join", { NetworkID: H2_NET, EndpointID: id, SandboxKey: sandbox, Options: {} });
  return { Address: String(Address), sandbox };
}

/** What Docker calls when the container goes: nothing is left of it in Trellis. */
async function removeAsDocker(id: string, address: string): Promise<void> {
  await ok("h2", "/NetworkDriver.Leave", { NetworkID: H2_NET, EndpointID: id });
  await ok("h2", "/NetworkDriver.DeleteEndpoint", { NetworkID: H2_NET, EndpointID: id });
  await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: address.split("/")[0] });
  expect(await endpointsOf("dk_l2")).toEqual([]);
}

describe("a plugin restarted (or a dockerd restarted)", () => {
  it("answers the same calls the same way from what it recorded", async () => {
    const held = await ok("h1", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
    await plugins.h1!.stop();
    await startPlugin("h1");
    expect(await ok("h1", "/IpamDriver.RequestPool", pool("10.78.0.0/24"))).toEqual({ PoolID: "10.78.0.0/24", Pool: "10.78.0.0/24", Data: {} });
    expect(await ok("h1", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: GATEWAY_OPTIONS })).toEqual({ Address: "10.78.0.1/24", Data: {} });
    expect(await endpointsOf("dk_l2")).toEqual([expect.objectContaining({ addresses: [held.Address], ipamOnly: true })]);
    expect(await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: held.Address.split("/")[0] })).toEqual({});
    expect(await endpointsOf("dk_l2")).toEqual([]);
  });

  it("takes up again a join that was waiting for its sandbox when it stopped, once the sandbox has its namespace", async () => {
    const id = "7".repeat(64);
    const { Address, sandbox } = await joinBeforeSandbox(id);
    await plugins.h2!.stop();
    await startPlugin("h2");
    execFileSync("mount", ["--bind", `/run/netns/${SANDBOXES[1]}`, sandbox]);
    try {
      await eventually("the container's own endpoint, after the restart", () => endpointsOf("dk_l2"), (list) => list.length === 1 && list[0]!.container === "docker-777777777777" && !list[0]!.ipamOnly);
      expect(await control.inspectEndpoint("docker-777777777777")).toMatchObject({ host: "h2", addresses: [Address], netns: sandbox, ifname: "eth0" });
      await removeAsDocker(id, Address);
    } finally {
      spawnSync("umount", [sandbox]);
    }
  });

  it("a plugin stopped after the planner's answer to the hand-over, before its own record of it, gets the same answer when it starts", async () => {
    const id = "8".repeat(64);
    const { Address, sandbox } = await joinBeforeSandbox(id);
    // The plugin's records as they are while the join waits: what a plugin stopped right after the attach left.
    const records = [join(work, "h2", "data", "endpoints", id), join(work, "h2", "data", "addresses", "dk_l2", Address.split("/")[0]!)];
    const waiting = records.map((file) => readFileSync(file));
    execFileSync("mount", ["--bind", `/run/netns/${SANDBOXES[1]}`, sandbox]);
    try {
      await eventually("the container's own endpoint", () => endpointsOf("dk_l2"), (list) => list.length === 1 && !list[0]!.ipamOnly);
      const attached = await control.inspectEndpoint("docker-888888888888");
      await plugins.h2!.stop();
      records.forEach((file, n) => writeFileSync(file, waiting[n]!));
      const logged = logs.h2!.length;
      await startPlugin("h2");
      await eventually("the join taken up again and recorded", () => JSON.parse(readFileSync(records[0]!, "utf8")) as { endpointId?: string }, (record) => record.endpointId === attached.id);
      expect(await control.inspectEndpoint("docker-888888888888")).toEqual(attached);
      expect(logs.h2!.slice(logged).filter((line) => line.startsWith("failed to attach Docker endpoint 888888888888"))).toEqual([]);
      await removeAsDocker(id, Address);
    } finally {
      spawnSync("umount", [sandbox]);
    }
  });
});

describe("docker network rm", () => {
  it("keeps the Trellis network while another host's container holds an address, and deletes it with the last", async () => {
    const held = await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.78.0.0/24", Address: "", Options: {} });
    expect(await ok("h1", "/NetworkDriver.DeleteNetwork", { NetworkID: H1_NET })).toEqual({});
    expect(await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: "10.78.0.1" })).toEqual({});
    expect(await ok("h1", "/IpamDriver.ReleasePool", { PoolID: "10.78.0.0/24" })).toEqual({});
    expect((await control.inspectNetwork("dk_l2")).name).toBe("dk_l2");
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.78.0.0/24", Address: held.Address.split("/")[0] });
    expect(await ok("h2", "/NetworkDriver.DeleteNetwork", { NetworkID: H2_NET })).toEqual({});
    await expect(control.inspectNetwork("dk_l2")).rejects.toThrow(/not found/);
    expect(await ok("h2", "/NetworkDriver.DeleteNetwork", { NetworkID: H2_NET })).toEqual({});
  });
});

describe("--ipam-driver=trellis under another driver (Docker's ipvlan, macvlan)", () => {
  const ipamPool = (extra: Record<string, unknown> = {}) => pool("10.80.0.0/24", { Options: { "trellis.network": "dk_ipam" }, ...extra });

  it("makes the Trellis network named by --ipam-opt trellis.network at RequestPool, and joins it from another host", async () => {
    expect(await ok("h1", "/IpamDriver.RequestPool", ipamPool())).toEqual({ PoolID: "10.80.0.0/24", Pool: "10.80.0.0/24", Data: {} });
    expect(await ok("h2", "/IpamDriver.RequestPool", ipamPool())).toEqual({ PoolID: "10.80.0.0/24", Pool: "10.80.0.0/24", Data: {} });
    expect(await control.inspectNetwork("dk_ipam")).toMatchObject({ subnets: [{ cidr: "10.80.0.0/24", gateway: "10.80.0.1" }] });
  });

  it("answers the gateway with the network's, and refuses another --gateway, saying which", async () => {
    expect(await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.80.0.0/24", Address: "", Options: GATEWAY_OPTIONS })).toEqual({ Address: "10.80.0.1/24", Data: {} });
    const other = await ok2("h2", "/IpamDriver.RequestAddress", { PoolID: "10.80.0.0/24", Address: "10.80.0.254", Options: GATEWAY_OPTIONS });
    expect(other).toEqual({ Error: "Trellis network dk_ipam has gateway 10.80.0.1 on 10.80.0.0/24: give --gateway=10.80.0.1, or leave --gateway out" });
  });

  it("gives the two hosts different addresses of the one network, and releases them", async () => {
    const a = (await ok("h1", "/IpamDriver.RequestAddress", { PoolID: "10.80.0.0/24", Address: "", Options: {} })).Address;
    const b = (await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.80.0.0/24", Address: "", Options: {} })).Address;
    expect([a, b].sort()).toEqual(["10.80.0.2/24", "10.80.0.3/24"]);
    expect((await endpointsOf("dk_ipam")).map((e) => e.host).sort()).toEqual(["h1", "h2"]);
    await ok("h1", "/IpamDriver.ReleaseAddress", { PoolID: "10.80.0.0/24", Address: a.split("/")[0] });
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.80.0.0/24", Address: b.split("/")[0] });
    expect(await endpointsOf("dk_ipam")).toEqual([]);
  });

  it("docker network rm (ReleasePool) keeps the network while another host's container is on it, and deletes it with the last", async () => {
    await ok("h2", "/IpamDriver.RequestAddress", { PoolID: "10.80.0.0/24", Address: "10.80.0.5", Options: {} });
    expect(await ok("h1", "/IpamDriver.ReleasePool", { PoolID: "10.80.0.0/24" })).toEqual({});
    expect((await control.inspectNetwork("dk_ipam")).name).toBe("dk_ipam");
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.80.0.0/24", Address: "10.80.0.5" });
    expect(await ok("h2", "/IpamDriver.ReleasePool", { PoolID: "10.80.0.0/24" })).toEqual({});
    await expect(control.inspectNetwork("dk_ipam")).rejects.toThrow(/not found/);
  });
});

describe("a dual-stack network", () => {
  const NET = "d".repeat(64);
  const v4 = { PoolID: "10.81.0.0/24", Options: {} };
  const v6 = { PoolID: "fd00:81::/64", Options: {} };

  it("is created with both pools, IPv6 on", async () => {
    await ok("h2", "/IpamDriver.RequestPool", pool("10.81.0.0/24"));
    expect(await ok("h2", "/IpamDriver.RequestPool", pool("fd00:81::/64"))).toEqual({ PoolID: "fd00:81::/64", Pool: "fd00:81::/64", Data: {} });
    expect(await ok("h2", "/IpamDriver.RequestAddress", { ...v6, Address: "", Options: GATEWAY_OPTIONS })).toEqual({ Address: "fd00:81::1/64", Data: {} });
    const body = {
      NetworkID: NET,
      Options: { "com.docker.network.enable_ipv6": true, "com.docker.network.generic": { "trellis.network": "dk_v6" } },
      IPv4Data: [{ AddressSpace: "trellis-local", Pool: "10.81.0.0/24", Gateway: "10.81.0.1/24", AuxAddresses: {} }],
      IPv6Data: [{ AddressSpace: "trellis-local", Pool: "fd00:81::/64", Gateway: "fd00:81::1/64", AuxAddresses: {} }],
    };
    expect(await ok("h2", "/NetworkDriver.CreateNetwork", body)).toEqual({});
    expect(await control.inspectNetwork("dk_v6")).toMatchObject({ ipv6: true, subnets: [{ cidr: "10.81.0.0/24" }, { cidr: "fd00:81::/64" }] });
  });

  it("gives a container one holding of an IPv4 and an IPv6 address, asked for one after the other as Docker does", async () => {
    expect(await ok("h2", "/IpamDriver.RequestAddress", { ...v4, Address: "" })).toEqual({ Address: "10.81.0.2/24", Data: {} });
    expect(await ok("h2", "/IpamDriver.RequestAddress", { ...v6, Address: "" })).toEqual({ Address: "fd00:81::2/64", Data: {} });
    expect(await endpointsOf("dk_v6")).toEqual([expect.objectContaining({ addresses: ["10.81.0.2/24", "fd00:81::2/64"], ipamOnly: true })]);
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "10.81.0.0/24", Address: "10.81.0.2" });
    await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: "fd00:81::/64", Address: "fd00:81::2" });
    expect(await endpointsOf("dk_v6")).toEqual([]);
  });

  it("gives --ip6 as asked, again after its release, every time", async () => {
    for (let i = 0; i < 2; i++) {
      await ok("h2", "/IpamDriver.RequestAddress", { ...v4, Address: "" });
      expect(await ok("h2", "/IpamDriver.RequestAddress", { ...v6, Address: "fd00:81::50" })).toEqual({ Address: "fd00:81::50/64", Data: {} });
      const [held] = await endpointsOf("dk_v6");
      expect(held!.addresses[1]).toBe("fd00:81::50/64");
      for (const address of held!.addresses) {
        const bareAddress = address.split("/")[0]!;
        await ok("h2", "/IpamDriver.ReleaseAddress", { PoolID: bareAddress.includes(":") ? "fd00:81::/64" : "10.81.0.0/24", Address: bareAddress });
      }
      expect(await endpointsOf("dk_v6")).toEqual([]);
    }
    expect(await ok("h2", "/NetworkDriver.DeleteNetwork", { NetworkID: NET })).toEqual({});
  });
});
