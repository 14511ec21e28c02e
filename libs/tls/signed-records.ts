import type { KvWatchEntry } from "@nats-io/kv";
import { codecOf, type MessageCodec } from "../bus/codec.js";
import { checkedAnnouncement, checkedEndpoint, checkedHeartbeat, checkedHostShim, checkedName, checkedNetwork } from "../bus/records.js";
import { Endpoint, HostShim, Network } from "../proto/gen/trellis/v1/network.js";
import { RouteAnnouncement } from "../proto/gen/trellis/v1/routes.js";
import { HostRecord, NameEntry } from "../proto/gen/trellis/v1/state.js";
import { DroppedRecords, type RecordVerifier, type Signed, type SigningService } from "./record-signature.js";

const announcementCodec = codecOf(RouteAnnouncement);
const hostCodec = codecOf(HostRecord);
const networkCodec = codecOf(Network);
const endpointCodec = codecOf(Endpoint);
const nameCodec = codecOf(NameEntry);
const hostShimCodec = codecOf(HostShim);

/**
 * What readers believe of the records stored in Trellis's buckets. A value that is no record of its key at all
 * (garbage, an address that is none, another key's record: libs/bus/records.ts) throws, and the follower logs it
 * once and ignores it. With a verifier (TLS), a record its rightful writer did not sign is dropped (logged once):
 * a host's own records (announcement, heartbeat) by that host's agent, what agents are told to build (networks,
 * desired endpoints and host shims, names) by a planner. Without one (the lab, a cluster without TLS), signatures are not asked for.
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
    const announcement = checkedAnnouncement(entry);
    return this.believed(`route announcement of host ${entry.key}`, announcement, this.verifier?.problem(announcementCodec, announcement, entry.key));
  }

  /** The heartbeat under the entry's key, or undefined when it may not be believed. */
  heartbeat(entry: KvWatchEntry): HostRecord | undefined {
    const record = checkedHeartbeat(entry);
    return this.believed(`heartbeat of host ${entry.key}`, record, this.verifier?.problem(hostCodec, record, entry.key));
  }

  /** The network under the entry's key (its name), or undefined when it may not be believed. */
  network(entry: KvWatchEntry): Network | undefined {
    return this.fromService("network", entry, networkCodec, checkedNetwork(entry), "planner");
  }

  /** The endpoint under the entry's key (`<host>.<endpoint id>`), or undefined when it may not be believed. */
  endpoint(entry: KvWatchEntry): Endpoint | undefined {
    return this.fromService("endpoint", entry, endpointCodec, checkedEndpoint(entry, "desired"), "planner");
  }

  /** The name under the entry's key (`<network id>.<container>`), or undefined when it may not be believed. */
  name(entry: KvWatchEntry): NameEntry | undefined {
    return this.fromService("name", entry, nameCodec, checkedName(entry), "planner");
  }

  /** The host shim under the entry's key (`<host>.shim.<network id>`), or undefined when it may not be believed. */
  hostShim(entry: KvWatchEntry): HostShim | undefined {
    return this.fromService("host shim", entry, hostShimCodec, checkedHostShim(entry), "planner");
  }

  private fromService<T extends Signed>(what: string, entry: KvWatchEntry, codec: MessageCodec<T>, record: T, service: SigningService): T | undefined {
    return this.believed(`${what} under key ${entry.key} of ${entry.bucket}`, record, this.verifier?.serviceProblem(codec, record, service));
  }

  private believed<T>(description: string, record: T, problem: string | undefined): T | undefined {
    if (!problem) return record;
    this.dropped.drop(description, problem);
    return undefined;
  }
}
