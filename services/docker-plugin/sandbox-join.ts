import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import { dirname } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { status as grpcStatus } from "@grpc/grpc-js";
import { dockerNameOf } from "./container-name.js";
import { TrellisRefusal, type TrellisControlPlane } from "./control-plane.js";
import { bare, type EndpointRecord, type PluginState } from "./state.js";

/** The interface Docker's first network of a container has; the agent makes it in Docker's sandbox. */
const IFNAME = "eth0";
/** How often, and how long, to look for the sandbox's namespace: Docker makes it when the container starts. */
const POLL_MS = 100;
const SANDBOX_WAIT_MS = 120_000;

export interface JoinContext {
  state: PluginState;
  trellis: TrellisControlPlane;
  host: string;
  /** dockerd's API, asked for the container's name once its sandbox exists. */
  dockerSocket: string;
  log: (line: string) => void;
}

/**
 * Docker calls Join before the container starts, when its sandbox (SandboxKey) is only a name: the namespace is
 * bind-mounted there by the runtime's prestart hook, after Join has answered. So the link is made after the
 * answer, once the namespace is there: Join starts it here, Leave stops what has not finished.
 */
export class SandboxJoins {
  private readonly pending = new Map<string, { abort: AbortController; done: Promise<void> }>();

  constructor(private readonly context: JoinContext) {}

  start(record: EndpointRecord, sandbox: string): void {
    if (this.pending.has(record.dockerId)) return;
    const abort = new AbortController();
    const done = this.joinWhenThere(record, sandbox, abort.signal)
      .catch((error: Error) => {
        if (!abort.signal.aborted) this.context.log(`failed to attach Docker endpoint ${record.dockerId.slice(0, 12)} (${record.container}): ${error.message}`);
      })
      .finally(() => this.pending.delete(record.dockerId));
    this.pending.set(record.dockerId, { abort, done });
  }

  /** Takes up again the joins that a stopped plugin left waiting for their sandbox (Join recorded it). */
  async resume(): Promise<void> {
    for (const record of await this.context.state.endpoints()) {
      if (record.sandbox && !record.endpointId) this.start(record, record.sandbox);
    }
  }

  /** Stops a join still waiting for its sandbox, and waits until it has stopped. */
  async stop(dockerId: string): Promise<void> {
    const join = this.pending.get(dockerId);
    if (!join) return;
    join.abort.abort();
    await join.done;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.pending.keys()].map((id) => this.stop(id)));
  }

  private async joinWhenThere(record: EndpointRecord, sandbox: string, signal: AbortSignal): Promise<void> {
    // Made first: a Leave may come at any point from here on.
    const aborted = new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
    await waitForNamespace(sandbox, signal);
    if (signal.aborted) return;
    const endpoint = await this.attachNamed(record, sandbox);
    // Leave need not wait for the agent's report: it takes the link away anyway.
    await Promise.race([this.context.trellis.waitUntilReady(endpoint), aborted]);
  }

  /**
   * Attaches under the Docker container's name, so that it resolves as itself on every host. Docker's names are
   * unique per host only: a name another host's container has already is refused by the planner, and this one
   * falls back to `docker-<endpoint id>`, which the log says.
   */
  private async attachNamed(record: EndpointRecord, sandbox: string): Promise<Endpoint> {
    const { name, why } = await dockerNameOf(this.context.dockerSocket, record.networkDockerId, record.dockerId);
    if (!name) {
      this.context.log(`Docker endpoint ${record.dockerId.slice(0, 12)} stays ${record.container} in Trellis: ${why}`);
      return handOver(this.context, record, sandbox);
    }
    try {
      return await handOver(this.context, { ...record, container: name }, sandbox);
    } catch (error) {
      if (!(error instanceof TrellisRefusal && error.code === grpcStatus.ALREADY_EXISTS)) throw error;
      this.context.log(`Docker container ${name} is ${record.container} in Trellis, and resolves by that name only: ${error.message}`);
      return handOver(this.context, record, sandbox);
    }
  }
}

/** One Join's attach under one name: the same intent however often the plugin tries it, another for the next Join. */
function joinIntentId(record: EndpointRecord): string {
  return createHash("sha256").update(`docker-join:${record.dockerId}:${record.joinId ?? ""}:${record.container}`).digest("hex").slice(0, 32);
}

/** A namespace bind-mounted on the sandbox's file: the file's device is nsfs, not its folder's. */
async function waitForNamespace(sandbox: string, signal: AbortSignal): Promise<void> {
  const deadline = Date.now() + SANDBOX_WAIT_MS;
  while (!signal.aborted) {
    const [file, folder] = await Promise.all([stat(sandbox).catch(() => undefined), stat(dirname(sandbox)).catch(() => undefined)]);
    if (file && folder && file.dev !== folder.dev) return;
    if (Date.now() > deadline) throw new Error(`Docker's sandbox ${sandbox} got no network namespace in ${SANDBOX_WAIT_MS / 1000}s (is this plugin in dockerd's mount namespace, or its exec root shared with it?)`);
    await sleep(POLL_MS, undefined, { signal }).catch(() => undefined);
  }
}

/**
 * Hands the addresses from their IPAM-only holder to the container's own Trellis endpoint in the sandbox, in one
 * planner intent (take_over): the addresses stay allocated throughout, so no other attach can get them between.
 * A refusal changes nothing: the holder keeps them, as Docker's Leave, DeleteEndpoint and ReleaseAddress expect.
 * A plugin restarted before it recorded the answer tries again under the same intent, and gets the same answer.
 */
async function handOver(context: JoinContext, record: EndpointRecord, sandbox: string): Promise<Endpoint> {
  const holding = await context.state.holding(record.network, bare(record.addresses[0]!));
  const ipv4 = bare(record.addresses.find((address) => !address.includes(":")) ?? "");
  const ipv6 = bare(record.addresses.find((address) => address.includes(":")) ?? "");
  const holder = holding && holding.holder !== record.container ? holding.holder : undefined;
  const endpoint = await context.trellis.attach({
    network: record.network,
    container: record.container,
    host: context.host,
    ipv4,
    ipv6,
    netnsPath: sandbox,
    ifname: IFNAME,
    ...(holder ? { takeOver: holder } : {}),
  }, { intentId: joinIntentId(record) });
  await context.state.saveHolding(record.network, { holder: record.container, addresses: endpoint.addresses });
  await context.state.saveEndpoint({ ...record, endpointId: endpoint.id, host: endpoint.host });
  return endpoint;
}
