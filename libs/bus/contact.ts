import type { NatsConnection } from "@nats-io/transport-node";

export interface ContactOptions {
  /** How often the server is asked for a PONG: how late a judgement of another host's silence may be. */
  probeEveryMs: number;
  /**
   * A PING unanswered this long means the server is cut off from us (frozen, or a network that drops): well
   * within the heartbeat window, so that the loss is known before anyone would be judged silent.
   */
  cutOffAfterMs: number;
}

export const DEFAULT_CONTACT: ContactOptions = { probeEveryMs: 1_000, cutOffAfterMs: 3_000 };
/** More unanswered PINGs than this are not sent: one answered proves as much as all of them. */
const MAX_OUTSTANDING = 8;

/**
 * What a process knows of its own contact with NATS, for judging others by their silence: another host's
 * heartbeat missing means that host is silent only if the bus was delivering meanwhile. A frozen server (SIGSTOP,
 * a stalled network) closes no TCP connection and nats.js pings only every two minutes, so contact is proven by
 * PINGs of our own: a PONG to a PING sent at time t means every message the server had sent before t has arrived
 * (the server answers in order), so silence up to t is real. A disconnect is known at once from nats.js's status.
 */
export class BusContact {
  /** Send time of the latest PING answered: up to then, what the bus did not deliver did not happen. */
  private provenAt = Date.now();
  /** When contact came back after it was lost; 0 when it never was. */
  private regained = 0;
  private lost = false;
  private readonly outstanding = new Set<number>();
  private readonly timer: NodeJS.Timeout;
  private stopped = false;
  private readonly listeners = new Set<(inContact: boolean) => void>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly options: ContactOptions = DEFAULT_CONTACT,
  ) {
    this.timer = setInterval(() => this.probe(), options.probeEveryMs);
    this.timer.unref();
    void this.followStatus();
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.timer);
  }

  /** Called with the new state whenever contact is lost or regained. */
  onChange(listener: (inContact: boolean) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** False while the server does not answer: nothing may then be concluded from anyone's silence. */
  inContact(): boolean {
    return !this.lost;
  }

  /** The latest moment up to which silence on the bus is known to be real (ms since the epoch). */
  knownUntil(): number {
    return this.provenAt;
  }

  /** When contact last came back after being lost (0: never lost): every host's silence counts from then at most. */
  regainedAt(): number {
    return this.regained;
  }

  private probe(): void {
    const now = Date.now();
    const oldest = Math.min(...this.outstanding);
    if (this.outstanding.size > 0 && now - oldest > this.options.cutOffAfterMs) this.setLost(true);
    if (this.outstanding.size >= MAX_OUTSTANDING || this.nc.isClosed()) return;
    this.outstanding.add(now);
    this.nc.flush().then(
      () => {
        this.outstanding.delete(now);
        if (now > this.provenAt) this.provenAt = now;
        this.setLost(false);
      },
      // Rejected on a disconnect: the status stream says so; a later PING proves contact again.
      () => this.outstanding.delete(now),
    );
  }

  private async followStatus(): Promise<void> {
    for await (const status of this.nc.status()) {
      if (this.stopped) return;
      if (status.type === "disconnect" || status.type === "staleConnection") this.setLost(true);
    }
  }

  private setLost(lost: boolean): void {
    if (lost === this.lost || this.stopped) return;
    this.lost = lost;
    if (!lost) this.regained = Date.now();
    for (const listener of this.listeners) listener(!lost);
  }
}
