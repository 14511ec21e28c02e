import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { parseBgpOptions, type BgpOptions } from "../../link-agent/bgp/options.js";
import { moduleOf } from "../../../libs/netlink/kinds.js";
import { DEFAULT_HEARTBEAT_MS } from "../../../libs/bus/subjects.js";
import { RecordSigner, RecordVerifier, type RecordTrust } from "../../../libs/tls/record-signature.js";
import { clientCredentials } from "../../../libs/grpc/credentials.js";
import type { LoadedTls } from "../../../libs/tls/settings.js";
import { parseCommand, UsageError } from "../parse.js";
import { settings } from "../settings.js";
import { metricsAddress, type MetricsService } from "../../../libs/metrics/endpoint.js";

const RESYNC_MS = 15_000;

// Each service's modules are loaded only by the command that runs it: an agent's process holds neither the
// planner's nor IPAM's (nor the gRPC server they bring), which is most of what it would otherwise keep in memory.
const ipamMain = () => import("../../ipam/main.js");
const plannerMain = () => import("../../planner/main.js");
const agentMain = () => import("../../link-agent/main.js");

/**
 * An allocation whose endpoint is gone is released after being seen gone twice, a minute apart. A host
 * counts as gone only after a day without heartbeat: its containers still exist in the planner, and an
 * agent that is merely down must find its addresses still its own when it returns.
 */
const LEAK_COLLECTION = { graceMs: 60_000, hostTimeoutMs: 24 * 3600_000, intervalMs: 15_000 };

type Stoppable = { stop(): Promise<void> };

/** Every service command takes its TLS files as flags too (TRELLIS_TLS_CA, TRELLIS_TLS_CERT, TRELLIS_TLS_KEY). */
const TLS_FLAGS = { "tls-ca": { type: "string" }, "tls-cert": { type: "string" }, "tls-key": { type: "string" } } as const;
const TLS_USAGE = "[--tls-ca=FILE --tls-cert=FILE --tls-key=FILE]";
/** A plaintext listener with the health service alone, for probes that speak no TLS (kubelet's). */
const HEALTH_FLAG = { "health-listen": { type: "string" } } as const;
const HEALTH_USAGE = "[--health-listen=HOST:PORT]";
/** Prometheus metrics on HOST:PORT, on by default (libs/metrics/endpoint.ts has the ports), off with --metrics=off. */
const METRICS_FLAG = { metrics: { type: "string" } } as const;
const METRICS_USAGE = "[--metrics=HOST:PORT|off]";

function metricsOf(service: MetricsService, flag: string | undefined, usage: string): string | undefined {
  try {
    return metricsAddress(service, flag);
  } catch (error) {
    throw new UsageError((error as Error).message, usage);
  }
}

function sayMetrics(service: string, address: string | undefined): void {
  if (address) console.log(`${service} metrics on http://${address}/metrics`);
}

function tlsOf(values: { "tls-ca"?: string | undefined; "tls-cert"?: string | undefined; "tls-key"?: string | undefined }) {
  return settings.tls({ ca: values["tls-ca"], cert: values["tls-cert"], key: values["tls-key"] });
}

const IPAM_USAGE = `Usage: trellis ipam [--nats=URL] [--listen=HOST:PORT] [--release-cooldown=SECONDS] ${TLS_USAGE} ${HEALTH_USAGE} ${METRICS_USAGE}`;

export async function ipamCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { nats: { type: "string" }, listen: { type: "string" }, "release-cooldown": { type: "string" }, ...TLS_FLAGS, ...HEALTH_FLAG, ...METRICS_FLAG }, IPAM_USAGE);
  const { startIpamService } = await ipamMain();
  const ipam = await startIpamService({
    natsUrl: values.nats ?? settings.natsUrl(),
    listen: values.listen ?? settings.ipamAddress(),
    collectLeaks: LEAK_COLLECTION,
    releaseCooldownMs: cooldownMs(values["release-cooldown"]),
    tls: tlsOf(values),
    healthListen: values["health-listen"],
    metricsListen: metricsOf("ipam", values.metrics, IPAM_USAGE),
  });
  sayMetrics("ipam", ipam.metricsAddress);
  return runUntilSignalled([ipam]);
}

const PLANNER_USAGE = `Usage: trellis planner [--nats=URL] [--listen=HOST:PORT] [--ipam=HOST:PORT] [--intent-retention=DURATION] [--repair-interval=DURATION] ${TLS_USAGE} ${HEALTH_USAGE} ${METRICS_USAGE}`;

export async function plannerCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(
    argv,
    {
      nats: { type: "string" },
      listen: { type: "string" },
      ipam: { type: "string" },
      "intent-retention": { type: "string" },
      "repair-interval": { type: "string" },
      ...TLS_FLAGS,
      ...HEALTH_FLAG,
      ...METRICS_FLAG,
    },
    PLANNER_USAGE,
  );
  const { DEFAULT_INTENT_RETENTION_MS, DEFAULT_REPAIR_INTERVAL_MS, startPlanner } = await plannerMain();
  const planner = await startPlanner({
    natsUrl: values.nats ?? settings.natsUrl(),
    listen: values.listen ?? settings.plannerListenAddress(),
    ipamAddress: values.ipam ?? settings.ipamAddress(),
    intentRetentionMs: durationMs("--intent-retention", values["intent-retention"], DEFAULT_INTENT_RETENTION_MS, MIN_INTENT_RETENTION_MS),
    repairIntervalMs: durationMs("--repair-interval", values["repair-interval"], DEFAULT_REPAIR_INTERVAL_MS, 1000),
    tls: tlsOf(values),
    healthListen: values["health-listen"],
    metricsListen: metricsOf("planner", values.metrics, PLANNER_USAGE),
  });
  sayMetrics("planner", planner.metricsAddress);
  console.log(`planner ready on ${planner.address}`);
  return runUntilSignalled([planner]);
}

const AGENT_USAGE =
  "Usage: trellis agent [--host=NAME] [--address=UNDERLAY-IP]... [--role=host|upstream] [--nats=URL] [--heartbeat-interval=SECONDS] [--bgp-as=AS --bgp-peer=ADDRESS[:AS]...] [--metrics=HOST:PORT|off] [--socket=PATH|off] [--host-dns=LOOPBACK-IP]";
const UP_USAGE = "Usage: trellis up [--nats=URL] [--host=NAME] [--address=UNDERLAY-IP]...";

export async function agentCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(
    argv,
    {
      nats: { type: "string" },
      host: { type: "string" },
      address: { type: "string", multiple: true },
      role: { type: "string" },
      "heartbeat-interval": { type: "string" },
      "bgp-as": { type: "string" },
      "bgp-peer": { type: "string", multiple: true },
      socket: { type: "string" },
      "host-dns": { type: "string" },
      ...METRICS_FLAG,
    },
    AGENT_USAGE,
  );
  const role = values.role ?? "host";
  if (role !== "host" && role !== "upstream") throw new UsageError(`invalid --role "${role}": must be host or upstream`, AGENT_USAGE);
  const host = values.host ?? settings.host();
  const addresses = underlayAddresses(values.address, AGENT_USAGE);
  const hostDns = hostDnsOf(values["host-dns"]);
  const metrics = metricsOf("agent", values.metrics, AGENT_USAGE);
  const tls = settings.tls();
  const memory = await import("../../link-agent/memory.js");
  // Once the flags are known good, and before anything is opened: the relaunch starts the agent again.
  memory.relaunchWithCompactMemory();
  const { startAgent } = await agentMain();
  memory.keepYoungGenerationSmall();
  memory.returnFreedMemoryRegularly();
  const agent = await startAgent(values.nats ?? settings.natsUrl(), {
    host,
    addresses,
    bgp: bgpOptions(values["bgp-as"], values["bgp-peer"], addresses),
    role,
    heartbeatMs: heartbeatMs(values["heartbeat-interval"]),
    resyncMs: RESYNC_MS,
    hostDns,
    ...recordTrust(host, tls),
  }, metrics, localApiOf(values.socket, tls));
  sayMetrics("agent", agent.metricsAddress);
  await agent.agent.settled();
  console.log(`agent ready for host ${host}`);
  warnMissingLinkKinds(host, agent.agent.missingLinkKinds);
  return runUntilSignalled([agent]);
}

/** --host-dns serves dockerd's resolv.conf on this host only: a loopback address, never one the network sees. */
function hostDnsOf(address: string | undefined): string | undefined {
  if (address === undefined) return undefined;
  if (!/^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address) || address === "127.0.0.11") {
    throw new UsageError(`invalid --host-dns "${address}": must be an IPv4 loopback address other than 127.0.0.11, such as 127.0.0.153`, AGENT_USAGE);
  }
  return address;
}

/** `trellis up`: ipam, planner and this host's agent in one process. */
export async function upCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { nats: { type: "string" }, host: { type: "string" }, address: { type: "string", multiple: true } }, UP_USAGE);
  const addresses = underlayAddresses(values.address, UP_USAGE);
  const natsUrl = values.nats ?? settings.natsUrl();
  const [{ startIpamService }, { startPlanner }, { startAgent }] = await Promise.all([ipamMain(), plannerMain(), agentMain()]);
  // One host, on loopback: gRPC in plaintext. One process has one certificate, and its agent would need the host's
  // to sign what the planner, with TLS, believes.
  const ipam = await startIpamService({ natsUrl, listen: settings.ipamAddress(), collectLeaks: LEAK_COLLECTION });
  const planner = await startPlanner({ natsUrl, listen: settings.plannerListenAddress(), ipamAddress: ipam.address });
  const host = values.host ?? settings.host();
  const agent = await startAgent(natsUrl, { host, addresses, role: "host", heartbeatMs: DEFAULT_HEARTBEAT_MS, resyncMs: RESYNC_MS });
  console.log(`trellis ready: planner on ${planner.address}, agent for host ${host}`);
  warnMissingLinkKinds(host, agent.agent.missingLinkKinds);
  return runUntilSignalled([agent, planner, ipam]);
}

/**
 * With TLS (TRELLIS_TLS_CA, and the host's agent certificate in TRELLIS_TLS_CERT and TRELLIS_TLS_KEY), the agent
 * signs its heartbeats and announcements and believes only those of other hosts that their own agents signed.
 */
function recordTrust(host: string, tls: LoadedTls | undefined): RecordTrust {
  if (!tls) return {};
  const signer = tls.own && new RecordSigner(tls);
  if (signer && signer.identity.name !== host) {
    throw new Error(`failed to start the agent of host ${host}: its certificate ${tls.files.cert} is for host ${signer.identity.name}: give it the certificate issued for ${host}`);
  }
  return { signer, verifier: new RecordVerifier(tls.ca) };
}

/**
 * The CNI plugins' way in (link-agent/local-api): on --socket, else TRELLIS_AGENT_SOCKET, else /run/trellis/agent.sock;
 * none with --socket=off. Its calls reach the planners of TRELLIS_PLANNER_ADDR with the agent's own TLS.
 */
function localApiOf(socket: string | undefined, tls: LoadedTls | undefined) {
  if (socket === "off") return undefined;
  if (socket === "") throw new UsageError(`invalid --socket "": give the path of a unix socket, or off`, AGENT_USAGE);
  return { socket: socket ?? settings.agentSocket(), planner: settings.plannerAddress(), credentials: clientCredentials(tls) };
}

/** Said when the agent starts: the operator learns at once what the planner will refuse on this host, and why. */
function warnMissingLinkKinds(host: string, kinds: readonly string[]): void {
  if (kinds.length === 0) return;
  console.error(
    `Warning: the kernel of host ${host} cannot create ${kinds.join(", ")} links (modprobe ${kinds.map(moduleOf).join(" ")}): the planner refuses containers here that need them`,
  );
}

/** A replay must find its intent's result: a retention shorter than a client's retry window would forget it. */
const MIN_INTENT_RETENTION_MS = 60_000;
const DURATION_UNITS_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** A planner duration: a whole number with a unit (s, m, h, d), e.g. 24h. */
function durationMs(flag: string, text: string | undefined, fallback: number, shortestMs: number): number {
  if (text === undefined) return fallback;
  const match = /^(\d+)([smhd])$/.exec(text);
  const ms = match ? Number(match[1]) * DURATION_UNITS_MS[match[2]!]! : NaN;
  if (!(ms >= shortestMs)) {
    throw new UsageError(`invalid ${flag} "${text}": expected a whole number with a unit (s, m, h or d), at least ${shortestMs / 1000} s, e.g. 24h`, PLANNER_USAGE);
  }
  return ms;
}

/**
 * `--heartbeat-interval`: whole seconds, 2 by default. Every agent follows every heartbeat, so a cluster of H hosts
 * carries H² / interval deliveries a second: lengthen it as the cluster grows (README, "Scaling on paper").
 */
function heartbeatMs(seconds: string | undefined): number {
  if (seconds === undefined) return DEFAULT_HEARTBEAT_MS;
  if (!/^\d+$/.test(seconds) || Number(seconds) < 1 || Number(seconds) > 300) {
    throw new UsageError(`invalid --heartbeat-interval "${seconds}": expected whole seconds from 1 to 300, e.g. 10`, AGENT_USAGE);
  }
  return Number(seconds) * 1000;
}

/** `--bgp-as` and `--bgp-peer`, checked before anything starts. */
function bgpOptions(asText: string | undefined, peers: string[] | undefined, addresses: string[]): BgpOptions | undefined {
  try {
    return parseBgpOptions(asText, peers, addresses);
  } catch (error) {
    throw new UsageError((error as Error).message, AGENT_USAGE);
  }
}

/** `--release-cooldown`: whole seconds, 0 (the default) for none. */
function cooldownMs(seconds: string | undefined): number {
  if (seconds === undefined) return 0;
  if (!/^\d+$/.test(seconds)) throw new UsageError(`invalid --release-cooldown "${seconds}": expected whole seconds, e.g. 30`, IPAM_USAGE);
  return Number(seconds) * 1000;
}

/**
 * `--address`, given once per family (an IPv4 and an IPv6 next hop for the host's L3 prefixes), or by
 * default the first non-loopback IPv4 address: a sane default for a host with one underlay interface.
 */
function underlayAddresses(given: string[] | undefined, usage: string): string[] {
  if (!given) {
    const found = Object.values(networkInterfaces())
      .flat()
      .find((a) => a && a.family === "IPv4" && !a.internal);
    if (!found) throw new UsageError("failed to find this host's underlay address: pass --address=IP", usage);
    return [found.address];
  }
  const families = new Map<number, string>();
  for (const address of given) {
    const family = isIP(address);
    if (family === 0) throw new UsageError(`invalid --address "${address}": expected an IPv4 or IPv6 address such as 192.168.1.11`, usage);
    const other = families.get(family);
    if (other) throw new UsageError(`--address ${other} and ${address} are both IPv${family}: give at most one per family`, usage);
    families.set(family, address);
  }
  return given;
}

function runUntilSignalled(services: Stoppable[]): Promise<number> {
  return new Promise((resolve) => {
    const stop = () => {
      Promise.all(services.map((s) => s.stop().catch(() => undefined))).then(() => resolve(0));
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
}
