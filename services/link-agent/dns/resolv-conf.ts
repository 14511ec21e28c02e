import { readFileSync } from "node:fs";
import ipaddr from "ipaddr.js";

/** Where every container's resolver looks, as in Docker: the agent answers there, inside the container. */
export const CONTAINER_NAMESERVER = "127.0.0.11";
/** glibc and musl read at most three nameserver lines. */
const MAX_NAMESERVERS = 3;

export interface ResolverConfig {
  nameservers: string[];
  search: string[];
  options: string[];
}

/**
 * The host's resolvers, read once at start. Forwarded queries leave from the agent's own namespace, so
 * every one of them is reachable as the host itself reaches it, 127.0.0.53 and other loopback resolvers
 * included; none is skipped, since the agent never listens in its own namespace and so cannot loop.
 */
export function readResolverConfig(path: string): ResolverConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (error) {
    // A host without resolv.conf still resolves its containers' names; other names then get SERVFAIL.
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return { nameservers: [], search: [], options: [] };
    throw new Error(`failed to read the host's resolvers from ${path}: ${(error as Error).message}`);
  }
  return parseResolverConfig(text);
}

export function parseResolverConfig(text: string): ResolverConfig {
  const config: ResolverConfig = { nameservers: [], search: [], options: [] };
  for (const line of text.split("\n")) {
    const [keyword, ...values] = line.replace(/[#;].*/, "").trim().split(/\s+/);
    if (keyword === "nameserver" && values[0] && ipaddr.isValid(values[0].replace(/%.*/, ""))) config.nameservers.push(values[0]);
    // The last search (or domain) line wins, as in glibc.
    else if (keyword === "search" || keyword === "domain") config.search = values;
    else if (keyword === "options") config.options.push(...values);
  }
  config.nameservers = config.nameservers.slice(0, MAX_NAMESERVERS);
  return config;
}

/**
 * A container's resolv.conf, as Docker writes it: the embedded server, the host's search domains and
 * options, and ndots:0 unless the host sets ndots, so that a container's bare name is asked as it is first.
 */
export function containerResolvConf(host: ResolverConfig, container: string): string {
  const options = host.options.some((option) => option.startsWith("ndots:")) ? host.options : [...host.options, "ndots:0"];
  const lines = [`# Written by the Trellis agent for container ${container}: its host's agent answers on ${CONTAINER_NAMESERVER}.`, `nameserver ${CONTAINER_NAMESERVER}`];
  if (host.search.length > 0) lines.push(`search ${host.search.join(" ")}`);
  lines.push(`options ${options.join(" ")}`);
  return `${lines.join("\n")}\n`;
}
