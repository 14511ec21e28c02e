// The link-agent's local API: what a short-lived client on the same host (the trellis CNI plugin) asks of the
// host's agent, which holds the long-lived connections to the control plane. One line of JSON each way on a unix
// socket that only root may open: no HTTP, whose modules would cost the plugin's every start (under the lab's
// emulation, a tenth of a second). This module is imported by the plugin too: types and constants only, no imports.

/** Where the agent serves its local API, unless TRELLIS_AGENT_SOCKET, `--socket` or a plugin's `socket` says otherwise. */
export const DEFAULT_AGENT_SOCKET = "/run/trellis/agent.sock";
/** The environment variable that names the socket, for the agent and for `trellis cni install`. */
export const AGENT_SOCKET_ENV = "TRELLIS_AGENT_SOCKET";

/** `trellis` makes the interface; `trellis-ipam` only hands out addresses, for another main plugin. */
export type PluginRole = "main" | "ipam";

/** One attachment of a runtime's container to a Trellis network, as CNI names it. */
export interface AttachmentRef {
  network: string;
  role: PluginRole;
  containerId: string;
  ifname: string;
}

export interface AddRequest extends AttachmentRef {
  /** The runtime's namespace (CNI_NETNS). */
  netns: string;
  /** The container's name in Trellis (from K8S_POD_NAME, else the container id). */
  container: string;
  /** Static addresses asked for, "" for any. */
  ipv4: string;
  ipv6: string;
}

export interface AttachmentRoute {
  /** "default" or a prefix. */
  dst: string;
  via: string;
  ipv6: boolean;
}

export interface AddResponse {
  /** The interface the agent made (absent for trellis-ipam, whose main plugin makes it). */
  iface?: { name: string; mac: string; sandbox: string };
  /** With prefix length, each with its subnet's gateway ("" in l3). */
  ips: { address: string; gateway: string }[];
  routes: AttachmentRoute[];
  nameservers: string[];
}

export interface CheckRequest extends AttachmentRef {
  netns: string;
  /** What the ADD's result said (prevResult): addresses with prefix length, and routes. */
  ips: string[];
  routes: { dst: string; gw?: string }[];
}

export interface StatusRequest {
  network: string;
}

export interface GcRequest {
  network: string;
  role: PluginRole;
  /** cni.dev/valid-attachments: every attachment the runtime still has. */
  valid: { containerId: string; ifname: string }[];
}

/** Every call: its request and its answer. */
export interface LocalCalls {
  add: { request: AddRequest; response: AddResponse };
  del: { request: AttachmentRef; response: Record<string, never> };
  check: { request: CheckRequest; response: Record<string, never> };
  status: { request: StatusRequest; response: Record<string, never> };
  gc: { request: GcRequest; response: Record<string, never> };
}
export type LocalCall = keyof LocalCalls;

export const LOCAL_CALLS: readonly LocalCall[] = ["add", "del", "check", "status", "gc"];

/**
 * One call per connection: the client writes one line, `{"call": "add", "request": {...}}`, and ends its side; the
 * agent writes one line back, `{"response": {...}}` or `{"error": {...}}`, and closes.
 */
export interface LocalRequestLine<K extends LocalCall = LocalCall> {
  call: K;
  request: LocalCalls[K]["request"];
}

export type LocalAnswerLine<K extends LocalCall = LocalCall> = { response: LocalCalls[K]["response"] } | { error: ErrorBody };

/** A failure, in CNI's terms (services/cni/errors.ts has the codes): the plugin prints it as it is. */
export interface ErrorBody {
  code: number;
  msg: string;
  details?: string;
}
