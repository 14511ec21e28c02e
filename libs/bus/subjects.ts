// Every NATS subject, stream and KV bucket name Trellis uses, and every key layout. Nothing else spells them.

/** Durable stream of intents from controllers. */
export const INTENT_STREAM = "TRELLIS_INTENTS";
export const INTENT_SUBJECT = "trellis.intents.submit";
/** Durable consumer through which the planner replicas work off the intent stream together. */
export const INTENT_CONSUMER = "planner";

export const Buckets = {
  /** Planner -> everyone: one key per network (`<name>`). Every host has every network's parent, so every agent follows it. */
  networks: "trellis-networks",
  /** Planner: one key per container (`<container>`), created only, so that a name is taken once cluster-wide. */
  endpoints: "trellis-endpoints",
  /** Planner -> one agent: one key per endpoint under its host (`<host>.<endpoint id>`); an agent follows only its host's. */
  desired: "trellis-desired",
  /** Planner -> agents: one key per container (`<network id>.<container>`), its name and addresses; agents follow the networks they serve. */
  names: "trellis-names",
  /** Agent -> everyone: one key per endpoint (`<host>.<endpoint id>`), what is really programmed. */
  status: "trellis-status",
  /** Agents: one key per host (`<host>`), refreshed as a heartbeat. */
  hosts: "trellis-hosts",
  /** Planner: one key per intent id, its result, so that a replay answers the same; kept for the replay window. */
  intents: "trellis-intents",
  /** Agent -> agents and upstreams: one key per host (`<host>`), its whole set of announced L3 prefixes. */
  routes: "trellis-routes",
  /** IPAM: subnets, addresses and their owners; agents follow its block keys (what each host may announce). */
  ipam: "trellis-ipam",
} as const;

// KV keys allow only [-/_=.a-zA-Z0-9], and "." separates the tokens that filters match: a name that is part of a
// key (a host's, a container's) is one token, escaped by keyToken.

/** A name as one key token: [A-Za-z0-9_-] stay, every other byte becomes =XX. */
export function keyToken(name: string): string {
  let token = "";
  for (const byte of new TextEncoder().encode(name)) {
    const char = String.fromCharCode(byte);
    token += /[A-Za-z0-9_-]/.test(char) ? char : `=${byte.toString(16).padStart(2, "0")}`;
  }
  return token;
}

export function statusKey(host: string, endpointId: string): string {
  return `${keyToken(host)}.${endpointId}`;
}

/** The endpoint id of a key of the status or desired bucket. */
export function endpointIdOfKey(key: string): string {
  return key.slice(key.lastIndexOf(".") + 1);
}

/** The keys of one host's endpoints, in the status bucket and in the desired bucket alike. */
export function hostKeysFilter(host: string): string {
  return `${keyToken(host)}.>`;
}

export function desiredKey(host: string, endpointId: string): string {
  return `${keyToken(host)}.${endpointId}`;
}

const HOST_SHIM_TOKEN = "shim";

/**
 * A host's shim on a network (trellis-desired, under the host's keys, so its agent's watch of `<host>.>` sees it):
 * `<host>.shim.<network id>`. Endpoint keys have two tokens, so the middle "shim" tells the two apart.
 */
export function hostShimKey(host: string, networkId: string): string {
  return `${keyToken(host)}.${HOST_SHIM_TOKEN}.${networkId}`;
}

export function isHostShimKey(key: string): boolean {
  const tokens = key.split(".");
  return tokens.length === 3 && tokens[1] === HOST_SHIM_TOKEN;
}

/** Every host's shim on one network: what `trellis network inspect` shows. */
export function networkHostShimsFilter(networkId: string): string {
  return `*.${HOST_SHIM_TOKEN}.${networkId}`;
}

export function nameKey(networkId: string, container: string): string {
  return `${networkId}.${keyToken(container)}`;
}

/** The names of one network's containers. */
export function networkNamesFilter(networkId: string): string {
  return `${networkId}.>`;
}

/** IPAM's block records (`block.<network>.<block>`, services/ipam/keys.ts), the only IPAM keys another service reads. */
export const IPAM_BLOCK_KEY_PREFIX = "block.";
export const IPAM_BLOCKS_FILTER = `${IPAM_BLOCK_KEY_PREFIX}>`;

/** How often an agent heartbeats by default (`trellis agent --heartbeat-interval`). */
export const DEFAULT_HEARTBEAT_MS = 2_000;
/** A host is taken for gone after this many of its heartbeat intervals without one. */
export const HEARTBEAT_MISSES = 5;
/** A host whose heartbeat is older than this, at the least, is taken for gone: its routes are withdrawn, and it counts as no evidence. */
export const HOST_STALE_AFTER_MS = HEARTBEAT_MISSES * DEFAULT_HEARTBEAT_MS;

/** How long a host that heartbeats every `intervalMs` (0: the default) may stay silent before it counts as gone. */
export function hostStaleAfterMs(intervalMs: number, atLeastMs = HOST_STALE_AFTER_MS): number {
  return Math.max(atLeastMs, HEARTBEAT_MISSES * intervalMs);
}

/** At most this many interface names go into a host's heartbeat record (HostRecord.interfaces). */
export const MAX_REPORTED_INTERFACES = 256;
