import type { KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../bus/codec.js";
import { checkedAnnouncement, checkedHeartbeat } from "../bus/records.js";
import { RouteAnnouncement } from "../proto/gen/trellis/v1/routes.js";
import { HostRecord } from "../proto/gen/trellis/v1/state.js";
import { DroppedRecords, type RecordVerifier } from "./record-signature.js";

const announcementCodec = codecOf(RouteAnnouncement);
const hostCodec = codecOf(HostRecord);

/**
 * What route distribution and the planner believe of the records hosts publish about themselves, stored under the host's key:
 * with a verifier, only those its agent signed (anything else is dropped and logged once); without one (the
 * lab, a cluster without TLS), every record, as before.
 */
export class SignedRecordFilter {
  private readonly dropped: DroppedRecords;

  constructor(
    private readonly verifier: RecordVerifier | undefined,
    log: (line: string) => void,
  ) {
    this.dropped = new DroppedRecords(log);
  }

  /**
   * The announcement under the entry's key, or undefined when it may not be believed; throws on one that is no
   * announcement of that key's host at all (libs/bus/records.ts), which the follower logs and ignores.
   */
  announcement(entry: KvWatchEntry): RouteAnnouncement | undefined {
    const announcement = checkedAnnouncement(entry);
    if (!this.verifier) return announcement;
    const problem = announcement.host === entry.key ? this.verifier.problem(announcementCodec, announcement, entry.key) : `it names host ${announcement.host}`;
    if (problem) this.dropped.drop("route announcement", entry.key, problem);
    return problem ? undefined : announcement;
  }

  /** The heartbeat under the entry's key, or undefined when it may not be believed; throws as announcement() does. */
  heartbeat(entry: KvWatchEntry): HostRecord | undefined {
    const record = checkedHeartbeat(entry);
    if (!this.verifier) return record;
    const problem = record.host === entry.key ? this.verifier.problem(hostCodec, record, entry.key) : `it names host ${record.host}`;
    if (problem) this.dropped.drop("heartbeat", entry.key, problem);
    return problem ? undefined : record;
  }
}
