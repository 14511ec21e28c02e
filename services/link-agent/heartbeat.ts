import type { KV } from "@nats-io/kv";
import { codecOf } from "../../libs/bus/codec.js";
import { HostRecord } from "../../libs/proto/gen/trellis/v1/state.js";
import type { RecordSigner } from "../../libs/tls/record-signature.js";

const hostCodec = codecOf(HostRecord);

export interface HeartbeatOf {
  host: string;
  /** The host's underlay addresses, at most one per family. */
  addresses: string[];
  role: "host" | "upstream";
  /** Link kinds the agent needs that the kernel lacks. */
  missingLinkKinds: readonly string[];
  /** The names of the host's own interfaces. */
  interfaces: readonly string[];
  /** How often the agent heartbeats. */
  heartbeatMs: number;
  /** Signs the record as the host's agent, so that readers with the CA believe it (libs/tls/record-signature.ts). */
  signer?: RecordSigner | undefined;
}

/**
 * Registers the host, or refreshes its record: the planner refuses a parent that no live host has, and
 * containers that need link kinds or a parent the host lacks; a silent host's routes are withdrawn.
 */
export async function writeHeartbeat(hosts: KV, of: HeartbeatOf): Promise<void> {
  const record: HostRecord = {
    host: of.host,
    address: of.addresses[0] ?? "",
    role: of.role,
    heartbeatAt: new Date().toISOString(),
    missingLinkKinds: [...of.missingLinkKinds],
    interfaces: [...of.interfaces],
    heartbeatIntervalMs: of.heartbeatMs,
  };
  await hosts.put(of.host, hostCodec.encode(of.signer ? of.signer.sign(hostCodec, record) : record));
}
