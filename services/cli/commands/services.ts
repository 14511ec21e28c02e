import { isIP } from "node:net";
import { networkInterfaces } from "node:os";
import { startIpamService } from "../../ipam/main.js";
import { startPlanner } from "../../planner/main.js";
import { startAgent } from "../../link-agent/main.js";
import { parseBgpOptions, type BgpOptions } from "../../link-agent/bgp/options.js";
import { moduleOf } from "../../../libs/netlink/kinds.js";
import { parseCommand, UsageError } from "../parse.js";
import { settings } from "../settings.js";

const HEARTBEAT_MS = 2000;
const RESYNC_MS = 15_000;

/**
 * An allocation whose endpoint is gone is released after being seen gone twice, a minute apart. A host
 * counts as gone only after a day without heartbeat: its containers still exist in the planner, and an
 * agent that is merely down must find its addresses still its own when it returns.
 */
const LEAK_COLLECTION = { graceMs: 60_000, hostTimeoutMs: 24 * 3600_000, intervalMs: 15_000 };

type Stoppable = { stop(): Promise<void> };

const IPAM_USAGE = "Usage: trellis ipam [--nats=URL] [--listen=HOST:PORT] [--release-cooldown=SECONDS]";

export async function ipamCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { nats: { type: "string" }, listen: { type: "string" }, "release-cooldown": { type: "string" } }, IPAM_USAGE);
  const ipam = await startIpamService({
    natsUrl: values.nats ?? settings.natsUrl(),
    listen: values.listen ?? settings.ipamAddress(),
    collectLeaks: LEAK_COLLECTION,
    releaseCooldownMs: cooldownMs(values["release-cooldown"]),
  });
  return runUntilSignalled([ipam]);
}

export async function plannerCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(
    argv,
    { nats: { type: "string" }, listen: { type: "string" }, ipam: { type: "string" } },
    "Usage: trellis planner [--nats=URL] [--listen=HOST:PORT] [--ipam=HOST:PORT]",
  );
  const planner = await startPlanner({
    natsUrl: values.nats ?? settings.natsUrl(),
    listen: values.listen ?? settings.plannerAddress(),
    ipamAddress: values.ipam ?? settings.ipamAddress(),
  });
  console.log(`planner ready on ${planner.address}`);
  return runUntilSignalled([planner]);
}

const AGENT_USAGE =
  "Usage: trellis agent [--host=NAME] [--address=UNDERLAY-IP]... [--role=host|upstream] [--nats=URL] [--bgp-as=AS --bgp-peer=ADDRESS[:AS]...]";
const UP_USAGE = "Usage: trellis up [--nats=URL] [--host=NAME] [--address=UNDERLAY-IP]...";

export async function agentCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(
    argv,
    {
      nats: { type: "string" },
      host: { type: "string" },
      address: { type: "string", multiple: true },
      role: { type: "string" },
      "bgp-as": { type: "string" },
      "bgp-peer": { type: "string", multiple: true },
    },
    AGENT_USAGE,
  );
  const role = values.role ?? "host";
  if (role !== "host" && role !== "upstream") throw new UsageError(`invalid --role "${role}": must be host or upstream`, AGENT_USAGE);
  const host = values.host ?? settings.host();
  const addresses = underlayAddresses(values.address, AGENT_USAGE);
  const agent = await startAgent(values.nats ?? settings.natsUrl(), {
    host,
    addresses,
    bgp: bgpOptions(values["bgp-as"], values["bgp-peer"], addresses),
    role,
    heartbeatMs: HEARTBEAT_MS,
    resyncMs: RESYNC_MS,
  });
  await agent.agent.settled();
  console.log(`agent ready for host ${host}`);
  warnMissingLinkKinds(host, agent.agent.missingLinkKinds);
  return runUntilSignalled([agent]);
}

/** `trellis up`: ipam, planner and this host's agent in one process. */
export async function upCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { nats: { type: "string" }, host: { type: "string" }, address: { type: "string", multiple: true } }, UP_USAGE);
  const addresses = underlayAddresses(values.address, UP_USAGE);
  const natsUrl = values.nats ?? settings.natsUrl();
  const ipam = await startIpamService({ natsUrl, listen: settings.ipamAddress(), collectLeaks: LEAK_COLLECTION });
  const planner = await startPlanner({ natsUrl, listen: settings.plannerAddress(), ipamAddress: ipam.address });
  const host = values.host ?? settings.host();
  const agent = await startAgent(natsUrl, { host, addresses, role: "host", heartbeatMs: HEARTBEAT_MS, resyncMs: RESYNC_MS });
  console.log(`trellis ready: planner on ${planner.address}, agent for host ${host}`);
  warnMissingLinkKinds(host, agent.agent.missingLinkKinds);
  return runUntilSignalled([agent, planner, ipam]);
}

/** Said when the agent starts: the operator learns at once what the planner will refuse on this host, and why. */
function warnMissingLinkKinds(host: string, kinds: readonly string[]): void {
  if (kinds.length === 0) return;
  console.error(
    `Warning: the kernel of host ${host} cannot create ${kinds.join(", ")} links (modprobe ${kinds.map(moduleOf).join(" ")}): the planner refuses containers here that need them`,
  );
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
