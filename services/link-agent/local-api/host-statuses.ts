import type { KV, KvWatchEntry } from "@nats-io/kv";
import { codecOf } from "../../../libs/bus/codec.js";
import { hostKeysFilter, statusKey } from "../../../libs/bus/subjects.js";
import type { Endpoint } from "../../../libs/proto/gen/trellis/v1/network.js";
import { EndpointState, EndpointStatus } from "../../../libs/proto/gen/trellis/v1/state.js";
import { DroppedRecords, type RecordVerifier } from "../../../libs/tls/record-signature.js";

const statusCodec = codecOf(EndpointStatus);

/**
 * The settled (ready or failed) statuses of this host's endpoints, from one watch of the host's status keys held for
 * the agent's life: an ADD waits here instead of opening a watch of its own, which costs a consumer on the NATS server
 * and round trips (seconds under the lab's emulation) on every call. What it holds is one status per container of
 * this host, as the agent itself holds; nothing grows with the cluster.
 */
export class HostStatuses {
  private readonly settled = new Map<string, EndpointStatus>();
  private readonly waiters = new Map<string, (status: EndpointStatus) => void>();
  private readonly dropped = new DroppedRecords((line) => console.error(`Warning: ${line}`));
  private watching: Promise<() => void> | undefined;
  private stopped = false;

  constructor(
    private readonly bucket: () => Promise<KV>,
    private readonly host: string,
    private readonly verifier?: RecordVerifier,
  ) {}

  /** Opens the watch, or again when it ended (the connection was lost for good): resolves once it is open. */
  async start(): Promise<void> {
    this.watching ??= this.open().catch((error: Error) => {
      this.watching = undefined;
      throw error;
    });
    await this.watching;
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

  async stop(): Promise<void> {
    this.stopped = true;
    const stop = await this.watching?.catch(() => undefined);
    stop?.();
  }

  private async open(): Promise<() => void> {
    const watch = await (await this.bucket()).watch({ key: hostKeysFilter(this.host) });
    void (async () => {
      for await (const entry of watch) this.take(entry);
    })()
      .catch((error: Error) => console.error(`failed to follow the statuses of host ${this.host}: ${error.message}`))
      .finally(() => {
        if (!this.stopped) this.watching = undefined;
      });
    return () => watch.stop();
  }

  private take(entry: KvWatchEntry): void {
    if (entry.operation !== "PUT") {
      this.settled.delete(entry.key);
      return;
    }
    const status = statusCodec.decode(entry.value);
    const problem = this.verifier?.problem(statusCodec, status, this.host);
    if (problem) return this.dropped.drop(`status under key ${entry.key}`, problem);
    if (status.state !== EndpointState.ENDPOINT_STATE_READY && status.state !== EndpointState.ENDPOINT_STATE_FAILED) {
      this.settled.delete(entry.key);
      return;
    }
    this.settled.set(entry.key, status);
    this.waiters.get(entry.key)?.(status);
  }
}
