import type { KvWatchEntry } from "@nats-io/kv";
import { codecOf, type MessageCodec } from "../bus/codec.js";
import { desiredKey, nameKey } from "../bus/subjects.js";
import { Endpoint, Network } from "../proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../proto/gen/trellis/v1/routes.js";
import { HostRecord, NameEntry } from "../proto/gen/trellis/v1/state.js";
import { DroppedRecords, type RecordVerifier, type Signed } from "./record-signature.js";

const announcementCodec = codecOf(RouteAnnouncement);
const hostCodec = codecOf(HostRecord);
const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);

/**
 * What readers believe of the records stored in Trellis's buckets: a record that does not decode, or that is not
 * the record its key names, is dropped (and logged once). With a verifier (TLS) so is one its rightful writer did
 * not sign: a host's own records (announcement, heartbeat) by that host's agent, what agents are told to build
 * (networks, desired endpoints, names) by a planner. Without one (the lab, a cluster without TLS), signatures are
 * not asked for, as before.
 */
export class SignedRecordFilter {
  private readonly dropped: DroppedRecords;

  constructor(
    private readonly verifier: RecordVerifier | undefined,
    log: (line: string) => void,
  ) {
    this.dropped = new DroppedRecords(log);
  }

  /** The announcement under the entry's key, or undefined when it may not be believed. */
  announcement(entry: KvWatchEntry): RouteAnnouncement | undefined {
    return this.ofHost("route announcement", entry, announcementCodec);
  }

  /** The heartbeat under the entry's key, or undefined when it may not be believed. */
  heartbeat(entry: KvWatchEntry): HostRecord | undefined {
    return this.ofHost("heartbeat", entry, hostCodec);
  }

  /** The network under the entry's key (its name), or undefined when it may not be believed. */
  network(entry: KvWatchEntry): Network | undefined {
    return this.ofPlanner("network", entry, networkCodec, (network) => network.name);
  }

  /** The endpoint under the entry's key (`<host>.<endpoint id>`), or undefined when it may not be believed. */
  endpoint(entry: KvWatchEntry): Endpoint | undefined {
    return this.ofPlanner("endpoint", entry, endpointCodec, (endpoint) => desiredKey(endpoint.host, endpoint.id));
  }

  /** The name under the entry's key (`<network id>.<container>`), or undefined when it may not be believed. */
  name(entry: KvWatchEntry): NameEntry | undefined {
    return this.ofPlanner("name", entry, nameCodec, (name) => nameKey(name.networkId, name.name));
  }

  private ofHost<T extends Signed & { host: string }>(what: string, entry: KvWatchEntry, codec: MessageCodec<T>): T | undefined {
    const record = this.decoded(`${what} of host ${entry.key}`, entry, codec);
    if (!record) return undefined;
    const problem =
      record.host !== entry.key ? `it names host ${record.host}` : this.verifier?.problem(codec, record, entry.key);
    if (problem) this.dropped.drop(`${what} of host ${entry.key}`, problem);
    return problem ? undefined : record;
  }

  private ofPlanner<T extends Signed>(what: string, entry: KvWatchEntry, codec: MessageCodec<T>, keyOf: (record: T) => string): T | undefined {
    const description = `${what} under key ${entry.key} of ${entry.bucket}`;
    const record = this.decoded(description, entry, codec);
    if (!record) return undefined;
    const key = keyOf(record);
    const problem = key !== entry.key ? `it is the ${what} of key ${key}` : this.verifier?.serviceProblem(codec, record, "planner");
    if (problem) this.dropped.drop(description, problem);
    return problem ? undefined : record;
  }

  private decoded<T>(description: string, entry: KvWatchEntry, codec: MessageCodec<T>): T | undefined {
    try {
      return codec.decode(entry.value);
    } catch (error) {
      this.dropped.drop(description, `it does not decode (${(error as Error).message})`);
      return undefined;
    }
  }
}
