import type { KV, KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../../libs/bus/codec.js";
import { FollowedBucket } from "../../../libs/bus/follow.js";
import { Buckets, hostKeysFilter, statusKey } from "../../../libs/bus/subjects.js";
import type { Endpoint } from "../../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, EndpointStatus } from "../../../libs/proto/gen/trellis/v1/state.js";
import { DroppedRecords, type RecordVerifier } from "../../../libs/tls/record-signature.js";

const statusCodec = codecOf(EndpointStatus);

/**
 * The settled (ready or failed) statuses of this host's endpoints, from one watch of the host's status keys held for
 * the agent's life: an ADD waits here for its container's report, and a DEL for its container's status to go, instead
 * of opening a watch of its own, which costs a consumer on the NATS server and round trips (seconds under the lab's
 * emulation) on every call. What it holds is one status per container of this host, as the agent itself holds;
 * nothing grows with the cluster. It answers only once the statuses stored at its start are in: a DEL that comes
 * just after the agent started must not take a status not yet seen for one that is gone.
 */
export class HostStatuses {
  private readonly settled = new Map<string, EndpointStatus>();
  private readonly waiters = new Map<string, (status: EndpointStatus) => void>();
  /** Every status of the host there is, whatever its state: key → container, and container → key. */
  private readonly containerOfKey = new Map<string, string>();
  private readonly keyOfContainer = new Map<string, string>();
  /** DEL's: container → what to call once its status is gone. */
  private readonly removalWaiters = new Map<string, Set<() => void>>();
  private readonly dropped = new DroppedRecords((line) => console.error(`Warning: ${line}`));
  private following: Promise<FollowedBucket> | undefined;

  constructor(
    private readonly bucket: () => Promise<KV>,
    private readonly host: string,
    private readonly verifier?: RecordVerifier,
  ) {}

  /** Follows the host's statuses (again, if opening failed before): resolves once the stored ones are in. */
  async start(): Promise<void> {
    this.following ??= this.bucket()
      .then((bucket) =>
        FollowedBucket.start(bucket, {
          filter: hostKeysFilter(this.host),
          bucketName: Buckets.status,
          onEntry: (entry) => this.take(entry),
          log: (line) => console.error(`Warning: ${line}`),
        }),
      )
      .catch((error: Error) => {
        this.following = undefined;
        throw error;
      });
    await this.following;
  }

  /** The endpoint's status once its agent (this one) has made it or failed; rejects after `timeoutMs`. */
  async settledStatus(endpoint: Endpoint, timeoutMs: number): Promise<EndpointStatus> {
    await this.start();
    const key = statusKey(this.host, endpoint.id);
    const known = this.settled.get(key);
    if (known) return known;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(key);
        reject(new Error(`timed out after ${timeoutMs / 1000}s waiting for the agent of host ${this.host} to make container ${endpoint.container}: see the agent's log`));
      }, timeoutMs);
      this.waiters.set(key, (status) => {
        clearTimeout(timer);
        this.waiters.delete(key);
        resolve(status);
      });
    });
  }

  /**
   * Waits until the container has no status on this host (its agent removes it once its link is gone): true then,
   * false after `timeoutMs`. A container whose status this watch has not seen has nothing to wait for.
   */
  async statusGone(container: string, timeoutMs: number): Promise<boolean> {
    await this.start();
    if (!this.keyOfContainer.has(container)) return true;
    return new Promise((resolve) => {
      const waiters = this.removalWaiters.get(container) ?? new Set();
      this.removalWaiters.set(container, waiters);
      const settle = (gone: boolean) => {
        clearTimeout(timer);
        waiters.delete(done);
        if (waiters.size === 0 && this.removalWaiters.get(container) === waiters) this.removalWaiters.delete(container);
        resolve(gone);
      };
      const done = () => settle(true);
      const timer = setTimeout(() => settle(false), timeoutMs);
      waiters.add(done);
    });
  }

  async stop(): Promise<void> {
    (await this.following?.catch(() => undefined))?.stop();
  }

  private take(entry: KvWatchEntry): void {
    if (entry.operation !== "PUT") {
      this.settled.delete(entry.key);
      this.forget(entry.key);
      return;
    }
    const status = statusCodec.decode(entry.value);
    const problem = this.verifier?.problem(statusCodec, status, this.host);
    if (problem) return this.dropped.drop(`status under key ${entry.key}`, problem);
    this.containerOfKey.set(entry.key, status.container);
    this.keyOfContainer.set(status.container, entry.key);
    if (status.state !== EndpointState.ENDPOINT_STATE_READY && status.state !== EndpointState.ENDPOINT_STATE_FAILED) {
      this.settled.delete(entry.key);
      return;
    }
    this.settled.set(entry.key, status);
    this.waiters.get(entry.key)?.(status);
  }

  /** A status removed: its container's DEL, if one waits, may answer. */
  private forget(key: string): void {
    const container = this.containerOfKey.get(key);
    if (container === undefined) return;
    this.containerOfKey.delete(key);
    if (this.keyOfContainer.get(container) !== key) return;
    this.keyOfContainer.delete(container);
    for (const done of [...(this.removalWaiters.get(container) ?? [])]) done();
  }
}
