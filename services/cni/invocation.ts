import { AGENT_SOCKET_ENV, DEFAULT_AGENT_SOCKET, type PluginRole } from "../link-agent/local-api/protocol.js";
import { CniCode, CniError } from "./errors.js";
import { checkVersion } from "./versions.js";

export const COMMANDS = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"] as const;
export type Command = (typeof COMMANDS)[number];

export type { PluginRole };

/** One call of the plugin: the runtime's environment and network configuration, checked. */
export interface Invocation {
  role: PluginRole;
  command: Command;
  version: string;
  /** The Trellis network (`network` of the plugin's config, or of its `ipam` section for trellis-ipam). */
  network: string;
  /** The host's agent's local API: the config's `socket`, else TRELLIS_AGENT_SOCKET, else the default. */
  socket: string;
  containerId: string;
  netns: string;
  ifname: string;
  args: Map<string, string>;
  config: Record<string, unknown>;
}

export function parseInvocation(role: PluginRole, env: NodeJS.ProcessEnv, stdin: string): Invocation {
  const command = env.CNI_COMMAND ?? "";
  if (!(COMMANDS as readonly string[]).includes(command)) {
    throw new CniError(CniCode.invalidEnvironment, `invalid CNI_COMMAND "${command}": give one of ${COMMANDS.join(", ")}`);
  }
  const config = command === "VERSION" ? {} : parseConfig(stdin);
  const version = command === "VERSION" ? "" : checkVersion(config.cniVersion);
  const section = role === "ipam" ? ((config.ipam as Record<string, unknown> | undefined) ?? {}) : config;
  const network = command === "VERSION" ? "" : requireNetwork(role, section.network);
  const invocation: Invocation = {
    role,
    command: command as Command,
    version,
    network,
    socket: stringSetting(section.socket) || env[AGENT_SOCKET_ENV] || DEFAULT_AGENT_SOCKET,
    containerId: env.CNI_CONTAINERID ?? "",
    netns: env.CNI_NETNS ?? "",
    ifname: env.CNI_IFNAME ?? "",
    args: parseArgs(env.CNI_ARGS ?? ""),
    config,
  };
  checkEnvironment(invocation);
  return invocation;
}

function parseConfig(stdin: string): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = JSON.parse(stdin);
  } catch (error) {
    throw new CniError(CniCode.decodeFailure, "failed to decode the network config on stdin", (error as Error).message);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new CniError(CniCode.decodeFailure, "failed to decode the network config on stdin: it is not a JSON object");
  }
  return parsed as Record<string, unknown>;
}

function requireNetwork(role: PluginRole, value: unknown): string {
  if (typeof value === "string" && value !== "") return value;
  const where = role === "ipam" ? `"ipam": {"type": "trellis-ipam", "network": "<Trellis network>"}` : `"network": "<Trellis network>"`;
  throw new CniError(CniCode.invalidConfig, `invalid network config: no Trellis network named; add ${where} (trellis network ls shows them)`);
}

function stringSetting(value: unknown): string {
  return typeof value === "string" ? value : "";
}

/** What each command needs from the runtime (SPEC.md, "Parameters"). */
function checkEnvironment(invocation: Invocation): void {
  const needed: [string, string][] = [];
  if (["ADD", "DEL", "CHECK"].includes(invocation.command)) needed.push(["CNI_CONTAINERID", invocation.containerId], ["CNI_IFNAME", invocation.ifname]);
  if (["ADD", "CHECK"].includes(invocation.command)) needed.push(["CNI_NETNS", invocation.netns]);
  const missing = needed.filter(([, value]) => value === "").map(([name]) => name);
  if (missing.length > 0) {
    throw new CniError(CniCode.invalidEnvironment, `invalid environment for ${invocation.command}: ${missing.join(" and ")} must be set`);
  }
}

/** CNI_ARGS: `KEY=VALUE` pairs separated by ';'. */
export function parseArgs(text: string): Map<string, string> {
  const args = new Map<string, string>();
  for (const pair of text.split(";").filter(Boolean)) {
    const at = pair.indexOf("=");
    if (at <= 0) throw new CniError(CniCode.invalidEnvironment, `invalid CNI_ARGS "${text}": "${pair}" is not KEY=VALUE`);
    args.set(pair.slice(0, at), pair.slice(at + 1));
  }
  return args;
}

/**
 * The container's name in Trellis, which its network's other containers resolve: the pod's name (with its
 * namespace, `web.default`, when the runtime gives one that differs: podman passes the container's name as both),
 * else the runtime's container id.
 */
export function containerName(invocation: Invocation): string {
  const pod = invocation.args.get("K8S_POD_NAME");
  if (!pod) return invocation.containerId;
  const namespace = invocation.args.get("K8S_POD_NAMESPACE");
  return namespace && namespace !== pod ? `${pod}.${namespace}` : pod;
}

/** A static address: `IP=` in CNI_ARGS (several separated by commas), else runtimeConfig.ips; one per family. */
export function staticAddresses(invocation: Invocation): { ipv4: string; ipv6: string } {
  const fromArgs = invocation.args.get("IP")?.split(",").filter(Boolean) ?? [];
  const runtimeConfig = (invocation.config.runtimeConfig as { ips?: unknown } | undefined) ?? {};
  const fromRuntime = Array.isArray(runtimeConfig.ips) ? runtimeConfig.ips.filter((ip): ip is string => typeof ip === "string") : [];
  const addresses = (fromArgs.length > 0 ? fromArgs : fromRuntime).map((address) => address.split("/")[0]!);
  const ipv4 = addresses.filter((address) => !address.includes(":"));
  const ipv6 = addresses.filter((address) => address.includes(":"));
  if (ipv4.length > 1 || ipv6.length > 1) {
    throw new CniError(CniCode.invalidConfig, `invalid static addresses ${addresses.join(", ")}: give at most one IPv4 and one IPv6 address`);
  }
  return { ipv4: ipv4[0] ?? "", ipv6: ipv6[0] ?? "" };
}
