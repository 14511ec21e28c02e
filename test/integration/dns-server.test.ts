import { execFile } from "node:child_process";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import type { NatsConnection } from "@nats-io/transport-node";
import dnsPacket, { type Answer, type DecodedPacket } from "dns-packet";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { codecOf } from "../../libs/bus/codec.js";
import { connectBus, openBucket } from "../../libs/bus/connection.js";
import { Buckets, desiredKey, nameKey } from "../../libs/bus/subjects.js";
import { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";
import { DesiredState } from "../../services/link-agent/desired.js";
import { DnsServer } from "../../services/link-agent/dns/server.js";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";

// The DNS server of one host against real clients (busybox nslookup, and a TCP-capable one), in
// namespaces the test makes, fed by a real names bucket; the host's resolver is a small DNS server of the
// test's on a loopback address. No packet leaves loopback or these namespaces.

const run = promisify(execFile);
const HOST = `dnstest${process.pid}`;
const UPSTREAM = "127.53.0.1";
/** The agent's --host-dns address, in this test's own namespace: what a dockerd's resolv.conf would name. */
const HOST_DNS = "127.53.0.2";
const CLIENT = new URL("../support/dns-query.mjs", import.meta.url).pathname;
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);

function endpoint(container: string, networkId: string): Endpoint {
  return {
    id: `id-${container}`,
    networkId,
    networkName: networkId,
    container,
    host: HOST,
    netns: `${container}@${HOST}`,
    ifname: "eth0",
    addresses: [],
    routes: [],
    createdAt: "",
    traceparent: "",
    intentId: "",
  };
}
const web = endpoint("web", "net1");
const other = endpoint("other", "net2");

/** busybox nslookup NAME 127.0.0.11 from a program that entered only the namespace's network. */
async function nslookup(netns: string, name: string, type?: string): Promise<{ code: number; output: string; ms: number }> {
  const started = Date.now();
  const args = ["--net=/run/netns/" + netns, "busybox", "nslookup", ...(type ? [`-type=${type}`] : []), name, "127.0.0.11"];
  try {
    const { stdout } = await run("nsenter", args, { timeout: 15_000 });
    return { code: 0, output: stdout, ms: Date.now() - started };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, output: `${failed.stdout ?? ""}${failed.stderr ?? ""}`, ms: Date.now() - started };
  }
}

/** busybox nslookup NAME HOST_DNS from this test's own namespace, as Docker's embedded DNS forwards from its host's. */
async function nslookupOnHost(name: string): Promise<{ code: number; output: string; ms: number }> {
  const started = Date.now();
  try {
    const { stdout } = await run("busybox", ["nslookup", name, HOST_DNS], { timeout: 15_000 });
    return { code: 0, output: stdout, ms: Date.now() - started };
  } catch (error) {
    const failed = error as { code?: number; stdout?: string; stderr?: string };
    return { code: failed.code ?? -1, output: `${failed.stdout ?? ""}${failed.stderr ?? ""}`, ms: Date.now() - started };
  }
}

async function query(netns: string, name: string, type: string, transport: "udp" | "tcp"): Promise<{ rcode: string; tc: boolean; answers: string[]; ms: number }> {
  const { stdout } = await run("nsenter", ["--net=/run/netns/" + netns, process.execPath, CLIENT, name, type, transport]);
  return JSON.parse(stdout) as { rcode: string; tc: boolean; answers: string[]; ms: number };
}

async function until<T>(what: () => Promise<T>, done: (value: T) => boolean, withinMs: number): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  for (;;) {
    const value = await what();
    if (done(value) || Date.now() - started > withinMs) return { value, ms: Date.now() - started };
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/**
 * The host's resolver: example.test has an address, nxdomain.test does not exist, servfail.test fails,
 * silent.test is never answered, and long.test has more records than UDP carries.
 */
function upstreamAnswer(message: Buffer, transport: "udp" | "tcp"): Buffer | undefined {
  const asked = dnsPacket.decode(message) as DecodedPacket;
  const name = asked.questions![0]!.name.toLowerCase();
  const reply = (rcode: number, answers: Answer[] = [], truncated = false) =>
    dnsPacket.encode({ type: "response", id: asked.id, flags: rcode | (truncated ? dnsPacket.TRUNCATED_RESPONSE : 0), questions: asked.questions, answers });
  const a = (data: string): Answer => ({ type: "A", name, ttl: 60, data });
  if (name === "example.test") return reply(0, [a("198.51.100.7")]);
  if (name === "nxdomain.test") return reply(3);
  if (name === "servfail.test") return reply(2);
  if (name === "long.test") return transport === "udp" ? reply(0, [], true) : reply(0, Array.from({ length: 60 }, (_, i) => a(`198.51.100.${i + 1}`)));
  if (name === "silent.test") return undefined;
  return reply(3);
}

async function startUpstream(): Promise<{ udp: UdpSocket; tcp: Server }> {
  const udp = createSocket("udp4");
  udp.on("message", (message, peer) => {
    const answer = upstreamAnswer(message, "udp");
    if (answer) udp.send(answer, peer.port, peer.address);
  });
  await new Promise<void>((resolve) => udp.bind(53, UPSTREAM, resolve));
  const tcp = createServer((socket) => {
    socket.on("data", (chunk) => {
      const answer = upstreamAnswer(chunk.subarray(2, 2 + chunk.readUInt16BE(0)), "tcp");
      if (answer) socket.write(Buffer.concat([Buffer.from([answer.length >> 8, answer.length & 0xff]), answer]));
    });
  });
  await new Promise<void>((resolve) => tcp.listen(53, UPSTREAM, resolve));
  return { udp, tcp };
}

async function addNamespace(netns: string): Promise<void> {
  await run("ip", ["netns", "add", netns]);
  await run("ip", ["-n", netns, "link", "set", "lo", "up"]);
}

describe("the embedded DNS server, in namespaces, against real resolvers", () => {
  let nats: NatsServer;
  let nc: NatsConnection;
  let desired: DesiredState;
  let server: DnsServer;
  let upstream: { udp: UdpSocket; tcp: Server };
  let etcDir: string;
  let names: Awaited<ReturnType<typeof openBucket>>;

  const putName = (networkId: string, name: string, addresses: string[]) => names.put(nameKey(networkId, name), nameCodec.encode({ networkId, name, addresses }));

  beforeAll(async () => {
    etcDir = mkdtempSync(join(tmpdir(), "trellis-dns-"));
    writeFileSync(join(etcDir, "host-resolv.conf"), `nameserver ${UPSTREAM}\nsearch corp.test\noptions edns0\n`);
    for (const e of [web, other]) await addNamespace(e.netns);
    upstream = await startUpstream();
    nats = await startNatsServer();
    nc = await connectBus({ servers: nats.url, name: "dns-test" });
    const [networks, desiredBucket, namesBucket] = await Promise.all([Buckets.networks, Buckets.desired, Buckets.names].map((b) => openBucket(nc, b)));
    names = namesBucket!;
    for (const e of [web, other]) await desiredBucket!.put(desiredKey(HOST, e.id), endpointCodec.encode(e));
    await putName("net1", "web", ["192.168.1.2", "2001:db8::2"]);
    await putName("net1", "db", ["192.168.1.3"]);
    await putName("net2", "other", ["10.0.0.2"]);
    await putName("net1", "big", Array.from({ length: 40 }, (_, i) => `10.9.0.${i + 1}`));
    server = DnsServer.start({ host: HOST, etcDir, resolvConf: join(etcDir, "host-resolv.conf") });
    desired = await DesiredState.start({ networks: networks!, desired: desiredBucket!, names: names }, HOST, () => undefined, (line) => console.error(line), server.names);
    for (const e of [web, other]) await server.serve(e);
    // The names of each network arrive through their own watch, a moment after the endpoints.
    await until(() => nslookup(web.netns, "db"), (r) => r.code === 0, 5_000);
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    desired?.stop();
    await nc?.close();
    await nats?.stop();
    upstream?.udp.close();
    upstream?.tcp.close();
    for (const e of [web, other]) await run("ip", ["netns", "delete", e.netns]).catch(() => undefined);
    rmSync(etcDir, { recursive: true, force: true });
  });

  it("answers a program that entered only the network namespace, with a container's IPv4 and IPv6 addresses", async () => {
    const result = await nslookup(web.netns, "web");
    expect(result.code, result.output).toBe(0);
    expect(result.output).toMatch(/^Address: 192\.168\.1\.2$/m);
    expect(result.output).toMatch(/^Address: 2001:db8::2$/m);
    expect((await nslookup(web.netns, "db", "AAAA")).output).toMatch(/Can't find db: No answer|^\s*$/m);
  });

  it("ignores case", async () => {
    expect((await nslookup(web.netns, "DB")).output).toMatch(/^Address: 192\.168\.1\.3$/m);
  });

  it("shows a container only the names of its own networks, and forwards the others", async () => {
    expect((await nslookup(other.netns, "other")).output).toMatch(/^Address: 10\.0\.0\.2$/m);
    const result = await nslookup(other.netns, "web");
    expect(result.output).toContain("server can't find web: NXDOMAIN");
    expect(result.code).not.toBe(0);
  });

  it("forwards other names to the host's resolvers, and relays NXDOMAIN and SERVFAIL as they come", async () => {
    expect((await nslookup(web.netns, "example.test")).output).toMatch(/^Address: 198\.51\.100\.7$/m);
    expect((await nslookup(web.netns, "nxdomain.test")).output).toContain("server can't find nxdomain.test: NXDOMAIN");
    expect((await nslookup(web.netns, "servfail.test")).output).toContain("server can't find servfail.test: SERVFAIL");
  });

  it("answers SERVFAIL when the host's resolver stays silent, within its 2 s, never hanging", async () => {
    const answer = await query(web.netns, "silent.test", "A", "udp");
    expect(answer.rcode).toBe("SERVFAIL");
    expect(answer.ms).toBeGreaterThanOrEqual(1_900);
    expect(answer.ms).toBeLessThan(2_500);
    // busybox (musl's resolver) asks again on SERVFAIL, until its own timeout of about 5 s: a clean failure.
    const nslookupResult = await nslookup(web.netns, "silent.test", "A");
    expect(nslookupResult.output).toMatch(/server can't find silent\.test: SERVFAIL|connection timed out/);
    expect(nslookupResult.code).not.toBe(0);
    expect(nslookupResult.ms).toBeLessThan(7_000);
  }, 15_000);

  it("asks the next resolver at once when the host cannot send to one, and answers SERVFAIL at once when it can send to none", async () => {
    // A broadcast address: connect() refuses it (EACCES) and nothing is sent, as with a resolver the host has no route to.
    const netns = `unreachable@${HOST}`;
    await addNamespace(netns);
    const answerFrom = async (resolvers: string[]) => {
      writeFileSync(join(etcDir, "unreachable.conf"), resolvers.map((r) => `nameserver ${r}\n`).join(""));
      const lonely = DnsServer.start({ host: HOST, etcDir, resolvConf: join(etcDir, "unreachable.conf") });
      try {
        await lonely.serve({ ...endpoint("unreachable", "net1"), netns });
        return await query(netns, "example.test", "A", "udp");
      } finally {
        await lonely.stop();
      }
    };
    try {
      const next = await answerFrom(["255.255.255.255", UPSTREAM]);
      expect(next).toMatchObject({ rcode: "NOERROR", answers: ["198.51.100.7"] });
      expect(next.ms).toBeLessThan(500);
      const none = await answerFrom(["255.255.255.255"]);
      expect(none.rcode).toBe("SERVFAIL");
      expect(none.ms).toBeLessThan(500);
    } finally {
      await run("ip", ["netns", "delete", netns]);
    }
  });

  it("truncates a long answer over UDP, with TC set, and gives it whole over TCP: its own and forwarded ones", async () => {
    expect(await query(web.netns, "big", "A", "udp")).toMatchObject({ rcode: "NOERROR", tc: true, answers: [] });
    const overTcp = await query(web.netns, "big", "A", "tcp");
    expect(overTcp.tc).toBe(false);
    expect(overTcp.answers).toHaveLength(40);
    expect((await query(web.netns, "long.test", "A", "udp")).tc).toBe(true);
    expect((await query(web.netns, "long.test", "A", "tcp")).answers).toHaveLength(60);
  });

  it("resolves a new name within 1 s of its entry in the names bucket, and stops within 1 s of its removal", async () => {
    await putName("net1", "newcomer", ["192.168.1.77"]);
    const added = await until(() => nslookup(web.netns, "newcomer", "A"), (r) => r.code === 0, 5_000);
    expect(added.value.output).toMatch(/^Address: 192\.168\.1\.77$/m);
    expect(added.ms).toBeLessThan(1_000);
    await names.delete(nameKey("net1", "newcomer"));
    const removed = await until(() => nslookup(web.netns, "newcomer", "A"), (r) => r.output.includes("NXDOMAIN"), 5_000);
    expect(removed.value.output).toContain("server can't find newcomer: NXDOMAIN");
    expect(removed.ms).toBeLessThan(1_000);
  });

  it("points the container's resolv.conf at 127.0.0.11, with the host's search domains and options", () => {
    expect(readFileSync(join(etcDir, web.netns, "resolv.conf"), "utf8")).toMatch(/^nameserver 127\.0\.0\.11\nsearch corp\.test\noptions edns0 ndots:0\n$/m);
    expect(readFileSync(join(etcDir, web.netns, "hosts"), "utf8")).not.toContain("192.168.1.2");
  });

  it("serves a namespace deleted and made again under the same name", async () => {
    await run("ip", ["netns", "delete", web.netns]);
    await addNamespace(web.netns);
    await server.serve(web);
    expect((await nslookup(web.netns, "web", "A")).output).toMatch(/^Address: 192\.168\.1\.2$/m);
  });

  it("closes a namespace's sockets when its last endpoint stops being served, and removes its /etc/netns folder on the full pass", async () => {
    expect(server.servedNamespaces).toBe(2);
    await server.retainOnly([web]);
    expect(server.servedNamespaces).toBe(1);
    await expect(query(other.netns, "other", "A", "tcp")).rejects.toThrow(/ECONNREFUSED/);
    expect(() => readFileSync(join(etcDir, other.netns, "resolv.conf"))).toThrow(/ENOENT/);
    await server.release(web.netns);
    expect(server.servedNamespaces).toBe(0);
  });

  it("--host-dns: answers in the agent's namespace from every network of the host, NXDOMAIN at once for a single-label name no container has, and forwards the rest", async () => {
    await server.listenOnHost(HOST_DNS);
    expect((await nslookupOnHost("web")).output).toMatch(/^Address: 192\.168\.1\.2$/m);
    expect((await nslookupOnHost("other")).output).toMatch(/^Address: 10\.0\.0\.2$/m);
    const unknown = await nslookupOnHost("nosuch");
    expect(unknown.output).toContain("server can't find nosuch: NXDOMAIN");
    expect(unknown.code).not.toBe(0);
    expect(unknown.ms).toBeLessThan(1_000);
    expect((await nslookupOnHost("example.test")).output).toMatch(/^Address: 198\.51\.100\.7$/m);
    await expect(server.listenOnHost(HOST_DNS)).rejects.toThrow(
      `failed to serve DNS on ${HOST_DNS}:53 in the agent's namespace: bind EADDRINUSE ${HOST_DNS}:53 (is another server there? give another --host-dns address)`,
    );
    expect((await nslookupOnHost("web")).output).toMatch(/^Address: 192\.168\.1\.2$/m);
  });
});
