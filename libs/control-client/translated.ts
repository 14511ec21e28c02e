import { status } from "@grpc/grpc-js";
import type { Endpoint, EndpointSpec, Network, NetworkSpec } from "../proto/gen/trellis/v1/network.js";
import { ControlApi, type ControlApiOptions, type IntentOptions } from "./client.js";
import { ControlRefusedError } from "./errors.js";

/**
 * The Control API calls a plugin makes for a container runtime (Docker's, CNI's), each failure said in the
 * runtime's own terms by `translate` (Docker reads `Err`, CNI a code). Detaching what is already gone succeeds:
 * runtimes repeat their removals after a restart or a failed call.
 */
export class TranslatedControlApi {
  protected readonly control: ControlApi;

  constructor(
    options: ControlApiOptions,
    private readonly translate: (error: Error) => Error,
  ) {
    this.control = new ControlApi(options);
  }

  createNetwork(spec: NetworkSpec): Promise<Network> {
    return this.call(() => this.control.createNetwork(spec));
  }

  inspectNetwork(name: string): Promise<Network> {
    return this.call(() => this.control.inspectNetwork(name));
  }

  deleteNetwork(name: string): Promise<void> {
    return this.call(() => this.control.deleteNetwork(name));
  }

  /** `options.intentId`: the caller's, so that a repeat after a restart gets the first run's answer. */
  attach(spec: EndpointSpec, options: IntentOptions = {}): Promise<Endpoint> {
    return this.call(() => this.control.attachEndpoint(spec, options));
  }

  async detach(container: string): Promise<void> {
    try {
      await this.control.detachEndpoint(container);
    } catch (error) {
      if (error instanceof ControlRefusedError && error.code === status.NOT_FOUND) return;
      throw this.translate(error as Error);
    }
  }

  close(): void {
    this.control.close();
  }

  protected async call<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      throw this.translate(error as Error);
    }
  }
}
