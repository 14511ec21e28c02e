// Mutual TLS and authorisation on the Control API and IPAM, with certificates made by `trellis certs` and real
// gRPC on loopback sockets. Each refused call is checked for its status and message, and that it changed nothing.
import { X509Certificate } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ChannelCredentials, status } from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets } from "../../libs/bus/subjects.js";
import { clientCredentials } from "../../libs/grpc/credentials.js";
import { callUnary, clientOptions } from "../../libs/grpc/unary.js";
import { ControlClient } from "../../libs/proto/gen/trellis/v1/control.js";
import { IpamClient } from "../../libs/proto/gen/trellis/v1/ipam.js";
import { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { RecordSigner } from "../../libs/tls/record-signature.js";
import { loadTls } from "../../libs/tls/settings.js";
import { writeHeartbeat } from "../../services/link-agent/heartbeat.js";
import { startIpamService, type RunningIpamService } from "../../services/ipam/main.js";
import { startPlanner, type RunningPlanner } from "../../services/planner/main.js";
import { startDockerPlugin } from "../../services/docker-plugin/main.js";
import { expiredCertificate, makeAuthority, type TestAuthority } from "../support/certificates.js";
import { HealthCheckResponse_ServingStatus as ServingStatus, HealthClient } from "../../libs/proto/gen/grpc/health/v1/health.js";
import { freePort, startNatsServer, type NatsServer } from "../support/nats-server.js";
import { refusal } from "../support/refusal.js";
import { runTrellis } from "../support/trellis-cli.js";

let authority: TestAuthority;
let stranger: TestAuthority;
let nats: NatsServer;
let ipam: RunningIpamService;
let planner: RunningPlanner;
let plannerHealth: string;
const clients: { close(): void }[] = [];

const NO_CERTIFICATE =
  "needs a client certificate from the cluster's CA, and the caller presented none the CA vouches for (none, another CA's, or an expired one): " +
  'set TRELLIS_TLS_CERT and TRELLIS_TLS_KEY to one from "trellis certs issue"';

function credentialsOf(name: string): ChannelCredentials {
  return clientCredentials(authority.tls(name));
}

function controlAs(credentials: ChannelCredentials): ControlClient {
  const client = new ControlClient(planner.address, credentials, clientOptions);
  clients.push(client);
  return client;
}

function ipamAs(credentials: ChannelCredentials): IpamClient {
  const client = new IpamClient(ipam.address, credentials, clientOptions);
  clients.push(client);
  return client;
}

const createNetwork = (client: ControlClient, name: string, subnet: string) =>
  callUnary(client.createNetwork.bind(client), { intentId: "", spec: NetworkSpec.fromPartial({ name, driver: "ipvlan", subnets: [subnet] }) });
const attach = (client: ControlClient, container: string, network: string) =>
  callUnary(client.attachEndpoint.bind(client), { intentId: "", spec: { network, container, host: "h1", ipv4: "", ipv6: "" } });

/** What is stored, as an operator sees it: networks and their containers. */
async function stored(): Promise<{ networks: string[]; endpoints: string[] }> {
  const operator = controlAs(credentialsOf("alice"));
  const networks = (await callUnary(operator.listNetworks.bind(operator), {})).networks.map((n) => n.name).sort();
  const endpoints = (await callUnary(operator.listEndpoints.bind(operator), { network: "", pageToken: "", pageSize: 0 })).endpoints.map((e) => `${e.container}@${e.networkName}`).sort();
  return { networks, endpoints };
}

/** The call is refused with this code and message, and the stored networks and containers are as before. */
async function expectRefused(call: () => Promise<unknown>, code: status, message: string): Promise<void> {
  const before = await stored();
  const error = await refusal(call());
  expect([status[error.code], error.details]).toEqual([status[code], message]);
  expect(await stored()).toEqual(before);
}

beforeAll(async () => {
  authority = await makeAuthority("tls");
  stranger = await makeAuthority("stranger");
  await authority.issue("ipam", "ipam", "127.0.0.1");
  await authority.issue("planner", "planner", "127.0.0.1");
  await authority.issue("alice", "operator");
  await authority.issue("sched", "controller");
  await authority.issue("bob", "reader");
  await authority.issue("h1", "agent");
  await stranger.issue("mallory", "operator");
  nats = await startNatsServer();
  ipam = await startIpamService({ natsUrl: nats.url, listen: "127.0.0.1:0", log: () => undefined, tls: authority.tls("ipam") });
  plannerHealth = `127.0.0.1:${await freePort()}`;
  planner = await startPlanner({ natsUrl: nats.url, listen: "127.0.0.1:0", ipamAddress: ipam.address, tls: authority.tls("planner"), healthListen: plannerHealth });
  const nc = await connectBus({ servers: nats.url, name: "grpc-tls-test" });
  // With TLS, the planner believes only heartbeats their host's agent signed.
  const heartbeat = { host: "h1", addresses: ["192.0.2.11"], role: "host" as const, missingLinkKinds: [], interfaces: [], heartbeatMs: 2000, signer: new RecordSigner(authority.tls("h1")) };
  await writeHeartbeat(await openBucket(nc, Buckets.hosts), heartbeat);
  await nc.close();
});

afterAll(async () => {
  for (const client of clients) client.close();
  await planner?.stop();
  await ipam?.stop();
  await nats?.stop();
});

describe("trellis certs", () => {
  it("writes every private key with mode 0600 and the certificates readable", () => {
    for (const name of ["ca", "ipam", "planner", "alice", "sched", "bob", "h1"]) {
      expect([name, statSync(`${authority.dir}/${name}.key`).mode & 0o777]).toEqual([name, 0o600]);
      expect([name, statSync(`${authority.dir}/${name}.crt`).mode & 0o777]).toEqual([name, 0o644]);
    }
  });

  it("puts the identity and the role's key usages in the certificate, and prints no key", async () => {
    const issued = await runTrellis({}, "certs", "issue", "u9", "--role=agent", `--dir=${authority.dir}`);
    expect(issued.code).toBe(0);
    expect(issued.stdout).toContain(`issued ${authority.dir}/u9.crt for URI:trellis://agent/u9`);
    expect(issued.stdout + issued.stderr).not.toContain("PRIVATE KEY");
    const certificate = (name: string) => new X509Certificate(readFileSync(`${authority.dir}/${name}.crt`));
    const [CLIENT_AUTH, SERVER_AUTH] = ["1.3.6.1.5.5.7.3.2", "1.3.6.1.5.5.7.3.1"];
    expect([certificate("u9").subject, certificate("u9").subjectAltName, certificate("u9").keyUsage]).toEqual(["O=Trellis\nOU=agent\nCN=u9", "URI:trellis://agent/u9", [CLIENT_AUTH]]);
    expect([certificate("planner").subjectAltName, certificate("planner").keyUsage?.sort()]).toEqual(["URI:trellis://planner/planner, IP Address:127.0.0.1", [SERVER_AUTH, CLIENT_AUTH].sort()]);
    expect(certificate("u9").checkIssued(new X509Certificate(readFileSync(authority.ca)))).toBe(true);
    const text = await runTrellis({}, "certs", "issue", "u9", "--role=agent", `--dir=${authority.dir}`);
    expect([text.code, text.stderr.trim()]).toEqual([1, `Error: failed to issue a certificate for u9: ${authority.dir}/u9.crt already exists (pass --force to renew it with a new key)`]);
  });
});

describe("the Control API with TLS", () => {
  it("lets an operator create a network, and a controller attach to it and detach, but not create or delete one", async () => {
    await createNetwork(controlAs(credentialsOf("alice")), "web", "10.70.0.0/24");
    const controller = controlAs(credentialsOf("sched"));
    await expect(attach(controller, "c1", "web")).resolves.toMatchObject({ container: "c1", host: "h1" });
    const lacks = (method: string) => `controller "sched" may not call ${method} on trellis.v1.Control: that takes the role operator`;
    await expectRefused(() => createNetwork(controller, "sched_net", "10.71.0.0/24"), status.PERMISSION_DENIED, lacks("CreateNetwork"));
    await expectRefused(() => callUnary(controller.deleteNetwork.bind(controller), { intentId: "", name: "web" }), status.PERMISSION_DENIED, lacks("DeleteNetwork"));
    await callUnary(controller.detachEndpoint.bind(controller), { intentId: "", container: "c1" });
    expect(await stored()).toEqual({ networks: ["web"], endpoints: [] });
  });

  it("places no container on a host whose heartbeat its agent did not sign", async () => {
    const nc = await connectBus({ servers: nats.url, name: "grpc-tls-test" });
    await writeHeartbeat(await openBucket(nc, Buckets.hosts), { host: "h3", addresses: ["192.0.2.13"], role: "host", missingLinkKinds: [], interfaces: [], heartbeatMs: 2000 });
    await nc.close();
    const operator = controlAs(credentialsOf("alice"));
    const attachH3 = () => callUnary(operator.attachEndpoint.bind(operator), { intentId: "", spec: { network: "web", container: "c3", host: "h3", ipv4: "", ipv6: "" } });
    await expectRefused(attachH3, status.NOT_FOUND, "host h3 is not known: known hosts are h1 (start trellis agent --host=h3 there)");
  });

  it("lets an agent attach and detach containers on its own host (its CNI plugins'), and on no other", async () => {
    await authority.issue("h2", "agent");
    const nc = await connectBus({ servers: nats.url, name: "grpc-tls-test" });
    const h2 = { host: "h2", addresses: ["192.0.2.12"], role: "host" as const, missingLinkKinds: [], interfaces: [], heartbeatMs: 2000, signer: new RecordSigner(authority.tls("h2")) };
    await writeHeartbeat(await openBucket(nc, Buckets.hosts), h2);
    await nc.close();
    const operator = controlAs(credentialsOf("alice"));
    await createNetwork(operator, "agentnet", "10.72.0.0/24");
    const agent = controlAs(credentialsOf("h1"));
    const attachOn = (client: ControlClient, container: string, host: string) =>
      callUnary(client.attachEndpoint.bind(client), { intentId: "", spec: { network: "agentnet", container, host, ipv4: "", ipv6: "" } });
    await expect(attachOn(agent, "a1", "h1")).resolves.toMatchObject({ container: "a1", host: "h1" });
    await expect(callUnary(agent.inspectNetwork.bind(agent), { name: "agentnet" })).resolves.toMatchObject({ name: "agentnet" });
    await expectRefused(() => attachOn(agent, "a2", "h2"), status.PERMISSION_DENIED, 'agent "h1" may attach containers on its own host only, not on host h2');
    await attachOn(operator, "b2", "h2");
    await expectRefused(() => callUnary(agent.detachEndpoint.bind(agent), { intentId: "", container: "b2" }), status.PERMISSION_DENIED, 'agent "h1" may detach containers on its own host only, not on host h2');
    await callUnary(agent.detachEndpoint.bind(agent), { intentId: "", container: "a1" });
    expect((await stored()).endpoints.filter((endpoint) => endpoint.endsWith("@agentnet"))).toEqual(["b2@agentnet"]);
    await expectRefused(() => createNetwork(agent, "agent_net", "10.73.0.0/24"), status.PERMISSION_DENIED, 'agent "h1" may not call CreateNetwork on trellis.v1.Control: that takes the role operator');
  });

  it("lets a reader list and inspect, and refuses it any change", async () => {
    const reader = controlAs(credentialsOf("bob"));
    expect((await callUnary(reader.inspectNetwork.bind(reader), { name: "web" })).name).toBe("web");
    const lacks = (method: string, roles: string) => `reader "bob" may not call ${method} on trellis.v1.Control: that takes the role ${roles}`;
    await expectRefused(() => createNetwork(reader, "bob_net", "10.72.0.0/24"), status.PERMISSION_DENIED, lacks("CreateNetwork", "operator"));
    await expectRefused(() => attach(reader, "c2", "web"), status.PERMISSION_DENIED, lacks("AttachEndpoint", "operator or controller or agent"));
  });

  it("refuses a client without a certificate, with another CA's, and with an expired one, as UNAUTHENTICATED", async () => {
    const ca = readFileSync(authority.ca);
    await expectRefused(() => createNetwork(controlAs(ChannelCredentials.createSsl(ca)), "anon_net", "10.73.0.0/24"), status.UNAUTHENTICATED, `CreateNetwork on trellis.v1.Control ${NO_CERTIFICATE}`);
    const mallory = { cert: readFileSync(`${stranger.dir}/mallory.crt`), key: readFileSync(`${stranger.dir}/mallory.key`) };
    await expectRefused(
      () => createNetwork(controlAs(ChannelCredentials.createSsl(ca, mallory.key, mallory.cert)), "mallory_net", "10.74.0.0/24"),
      status.UNAUTHENTICATED,
      `CreateNetwork on trellis.v1.Control ${NO_CERTIFICATE}`,
    );
    const expired = expiredCertificate(authority, "old", "operator");
    const oldCredentials = ChannelCredentials.createSsl(ca, readFileSync(expired.key), readFileSync(expired.cert));
    await expectRefused(() => createNetwork(controlAs(oldCredentials), "old_net", "10.75.0.0/24"), status.UNAUTHENTICATED, `CreateNetwork on trellis.v1.Control ${NO_CERTIFICATE}`);
  });

  it("is not reached by a plaintext client, nor by one that does not trust the server's CA", async () => {
    const plaintext = controlAs(ChannelCredentials.createInsecure());
    expect((await refusal(callUnary(plaintext.listNetworks.bind(plaintext), {}, 3000))).code).toBe(status.UNAVAILABLE);
    const distrusting = controlAs(clientCredentials(stranger.tls("mallory")));
    const error = await refusal(callUnary(distrusting.listNetworks.bind(distrusting), {}, 3000));
    expect([error.code, error.details]).toEqual([status.UNAVAILABLE, expect.stringContaining("self-signed certificate in certificate chain")]);
  });

  it("answers health probes in plaintext on --health-listen, which serves nothing else", async () => {
    const health = new HealthClient(plannerHealth, ChannelCredentials.createInsecure());
    clients.push(health);
    expect(await callUnary(health.check.bind(health), { service: "trellis.v1.Control" })).toEqual({ status: ServingStatus.SERVING });
    const control = new ControlClient(plannerHealth, ChannelCredentials.createInsecure(), clientOptions);
    clients.push(control);
    await expectRefused(() => createNetwork(control, "probe_net", "10.78.0.0/24"), status.UNIMPLEMENTED, expect.stringContaining("CreateNetwork") as unknown as string);
  });

  it("takes the CLI's certificate from TRELLIS_TLS_*: an operator's creates, a reader's is refused with the message and changes nothing", async () => {
    const cli = (name: string, ...args: string[]) => runTrellis({ ...authority.environment(name), TRELLIS_PLANNER_ADDR: planner.address }, ...args);
    expect((await cli("alice", "network", "create", "--subnet=10.76.0.0/24", "cli_net")).code).toBe(0);
    const before = await stored();
    const refused = await cli("bob", "network", "create", "--subnet=10.77.0.0/24", "bob_cli_net");
    expect([refused.code, refused.stderr.trim()]).toEqual([1, 'Error: reader "bob" may not call CreateNetwork on trellis.v1.Control: that takes the role operator']);
    const listed = await cli("bob", "network", "ls");
    expect(listed.stdout).toContain("cli_net");
    expect(listed.stdout).not.toContain("bob_cli_net");
    expect(await stored()).toEqual(before);
  });

  it("refuses an expired certificate at start, in the CLI and in a service, saying when it expired and what to do", async () => {
    const expired = expiredCertificate(authority, "older", "operator");
    const env = { TRELLIS_TLS_CA: authority.ca, TRELLIS_TLS_CERT: expired.cert, TRELLIS_TLS_KEY: expired.key, TRELLIS_PLANNER_ADDR: planner.address };
    const message = `failed to load TLS certificate ${expired.cert} of operator "older": it expired on 2020-01-31T00:00:00.000Z; issue a new one with "trellis certs issue older --role=operator --force"`;
    const cli = await runTrellis(env, "network", "ls");
    expect([cli.code, cli.stderr.trim()]).toEqual([1, `Error: ${message}`]);
    const service = await runTrellis(env, "ipam", "--listen=127.0.0.1:0", `--nats=${nats.url}`);
    expect([service.code, service.stderr.trim()]).toEqual([1, `Error: ${message}`]);
  });

  it("warns at start about a certificate that expires within 30 days", async () => {
    await runTrellis({}, "certs", "issue", "soon", "--role=reader", "--days=10", `--dir=${authority.dir}`);
    const warnings: string[] = [];
    loadTls({ ca: authority.ca, cert: `${authority.dir}/soon.crt`, key: `${authority.dir}/soon.key` }, (line) => warnings.push(line));
    expect(warnings).toEqual([expect.stringMatching(/^Warning: TLS certificate \S+soon\.crt of reader "soon" expires on \S+, in 9 day\(s\): issue a new one with "trellis certs issue soon --role=reader --force"$/)]);
  });
});

describe("IPAM with TLS", () => {
  it("answers the planner's certificate, and refuses an agent's and an operator's", async () => {
    const operator = controlAs(credentialsOf("alice"));
    const networkId = (await callUnary(operator.inspectNetwork.bind(operator), { name: "web" })).id;
    const asPlanner = ipamAs(credentialsOf("planner"));
    const before = await callUnary(asPlanner.listAllocations.bind(asPlanner), { networkId });
    expect(before.allocations.map((a) => a.address)).toEqual(["10.70.0.1/24"]);
    for (const [name, identity] of [["h1", 'agent "h1"'], ["alice", 'operator "alice"']]) {
      const client = ipamAs(credentialsOf(name));
      const error = await refusal(callUnary(client.allocateAddress.bind(client), { networkId, endpointId: "e1", host: "h1", ipv6: false, address: "" }));
      expect([status[error.code], error.details]).toEqual(["PERMISSION_DENIED", `${identity} may not call AllocateAddress on trellis.v1.Ipam: that takes the role planner`]);
    }
    expect(await callUnary(asPlanner.listAllocations.bind(asPlanner), { networkId })).toEqual(before);
  });

  it("refuses its call stream to an agent before any call on it is handled", async () => {
    const client = ipamAs(credentialsOf("h1"));
    const stream = client.addressCalls();
    const error = await new Promise<{ code: number; details: string }>((resolve) => stream.on("error", resolve));
    expect([status[error.code], error.details]).toEqual(["PERMISSION_DENIED", 'agent "h1" may not call AddressCalls on trellis.v1.Ipam: that takes the role planner']);
  });
});

describe("trellis docker-plugin with TLS", () => {
  /** One call as dockerd makes it, on the plugin's socket. */
  function dockerCall(socket: string, method: string, body: unknown): Promise<Record<string, unknown>> {
    const text = JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = request({ socketPath: socket, path: method, method: "POST", headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) } }, (res) => {
        let data = "";
        res.on("data", (chunk: Buffer) => (data += chunk.toString()));
        res.on("end", () => resolve(JSON.parse(data) as Record<string, unknown>));
      });
      req.on("error", reject);
      req.end(text);
    });
  }

  async function createThroughPlugin(identity: string, network: string, subnet: string): Promise<Record<string, unknown>> {
    const work = mkdtempSync(join(tmpdir(), "trellis-docker-tls-"));
    const plugin = await startDockerPlugin({ socket: join(work, "trellis.sock"), dataDir: join(work, "data"), host: "h1", planner: planner.address, nats: nats.url, dockerSocket: join(work, "docker.sock"), tls: authority.tls(identity), log: () => undefined });
    try {
      const pool = { AddressSpace: "trellis-local", Pool: subnet, SubPool: "", Options: {}, V6: false };
      expect((await dockerCall(plugin.socket, "/IpamDriver.RequestPool", pool)).Error ?? "").toBe("");
      return await dockerCall(plugin.socket, "/NetworkDriver.CreateNetwork", {
        NetworkID: "c".repeat(64),
        Options: { "com.docker.network.enable_ipv6": false, "com.docker.network.generic": { "trellis.network": network, parent: "eth0" } },
        IPv4Data: [{ AddressSpace: "trellis-local", Pool: subnet, Gateway: "", AuxAddresses: {} }],
        IPv6Data: [],
      });
    } finally {
      await plugin.stop();
      rmSync(work, { recursive: true, force: true });
    }
  }

  it("creates a network through the planner with an operator's certificate, and says a reader's refusal in Err, changing nothing", async () => {
    expect(await createThroughPlugin("alice", "docker_tls", "10.75.0.0/24")).toEqual({});
    expect((await stored()).networks).toContain("docker_tls");
    const before = await stored();
    expect(await createThroughPlugin("bob", "docker_bob", "10.76.0.0/24")).toEqual({
      Err: 'Trellis refused: reader "bob" may not call CreateNetwork on trellis.v1.Control: that takes the role operator',
    });
    expect(await stored()).toEqual(before);
  });
});
