// Every NATS subject, stream and KV bucket name Trellis uses. Nothing else spells them.

/** Durable stream of intents from controllers. */
export const INTENT_STREAM = "TRELLIS_INTENTS";
export const INTENT_SUBJECT = "trellis.intents.submit";
/** Durable consumer through which the planner works off the intent stream. */
export const INTENT_CONSUMER = "planner";

export const Buckets = {
  /** Planner: one key per network (`<name>`). */
  networks: "trellis-networks",
  /** Planner: one key per endpoint (`<container>`). */
  endpoints: "trellis-endpoints",
  /** Planner -> agent: one key per host (`<host>`), the host's whole desired state. */
  desired: "trellis-desired",
  /** Agent -> everyone: one key per endpoint (`<host>.<endpoint id>`), what is really programmed. */
  status: "trellis-status",
  /** Agents: one key per host (`<host>`), refreshed as a heartbeat. */
  hosts: "trellis-hosts",
  /** Planner: one key per intent id, its result, so that a replay answers the same. */
  intents: "trellis-intents",
  /** Agent -> agents and upstreams: one key per host (`<host>`), its whole set of announced L3 prefixes. */
  routes: "trellis-routes",
  /** IPAM: subnets, addresses and their owners. */
  ipam: "trellis-ipam",
} as const;

export function statusKey(host: string, endpointId: string): string {
  return `${host}.${endpointId}`;
}

export function hostStatusFilter(host: string): string {
  return `${host}.>`;
}
