import type { KV } from "@nats-io/kv";
import { codecOf, sameBytes } from "../../libs/bus/codec.js";
import { endpointIdOfKey, hostKeysFilter, statusKey } from "../../libs/bus/subjects.js";
import { EndpointStatus } from "../../libs/proto/gen/trellis/v1/state.js";
import type { RecordTrust } from "../../libs/tls/record-signature.js";

const statusCodec = codecOf(EndpointStatus);

/**
 * This host's keys in the status bucket: what the kernel really has for each of its endpoints. It
 * remembers what it published (without the time stamp) so that a pass that changes nothing writes nothing.
 */
export class StatusPublisher {
  private readonly published = new Map<string, Uint8Array>();

  constructor(
    private readonly bucket: KV,
    private readonly host: string,
    /** Signs what it writes; a stored status that is not validly its own is written again (libs/tls/record-signature.ts). */
    private readonly trust: RecordTrust = {},
  ) {}

  /** Reads what an earlier run of the agent published, so that a restart rewrites nothing that is right. */
  async load(): Promise<void> {
    for await (const key of await this.bucket.keys(hostKeysFilter(this.host))) {
      const entry = await this.bucket.get(key);
      if (entry?.operation !== "PUT") continue;
      let stored: EndpointStatus;
      try {
        stored = statusCodec.decode(entry.value);
      } catch {
        continue; // not a status (someone else's garbage): written again by the first pass
      }
      if (this.trust.verifier?.problem(statusCodec, stored, this.host)) continue;
      this.published.set(key, statusCodec.encode({ ...stored, updatedAt: "", signature: undefined }));
    }
  }

  /** Writes the status of one endpoint if it changed; says whether it did. */
  async put(status: EndpointStatus): Promise<boolean> {
    const key = statusKey(this.host, status.endpointId);
    const bytes = statusCodec.encode(status);
    if (sameBytes(this.published.get(key), bytes)) return false;
    if (status.state !== this.lastState(key) && status.message) console.error(`endpoint ${status.container}: ${status.message}`);
    const stamped = { ...status, updatedAt: new Date().toISOString() };
    await this.bucket.put(key, statusCodec.encode(this.trust.signer ? this.trust.signer.sign(statusCodec, stamped) : stamped));
    this.published.set(key, bytes);
    return true;
  }

  /** Removes the status of an endpoint gone from this host; says whether there was one. */
  async remove(endpointId: string): Promise<boolean> {
    const key = statusKey(this.host, endpointId);
    if (!this.published.has(key)) return false;
    await this.bucket.delete(key);
    this.published.delete(key);
    return true;
  }

  /** The endpoints it has a status of (published by this run or an earlier one). */
  endpointIds(): string[] {
    return [...this.published.keys()].map(endpointIdOfKey);
  }

  private lastState(key: string): number | undefined {
    const bytes = this.published.get(key);
    return bytes && statusCodec.decode(bytes).state;
  }
}
