import { EndpointState } from "../../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint } from "../../../libs/proto/gen/trellis/v1/network.js";
import { CniCode, CniError } from "../../cni/errors.js";
import { listRecords, readRecord, removeRecord, saveRecord, type AttachmentRecord } from "./attachments.js";
import { NEVER_REACHED, type ControlPlane } from "./control-plane.js";
import { readInterface } from "./kernel.js";
import type { AddRequest, AddResponse, AttachmentRef, CheckRequest, GcRequest, LocalCall, LocalCalls, StatusRequest } from "./protocol.js";

/** The host's DNS server, in every container namespace the agent serves (README, "The DNS server"). */
const HOST_DNS = "127.0.0.11";
/** How long DEL waits for the agent to take the link away before it answers all the same (the address is released). */
const RELEASE_WAIT_MS = 20_000;

export interface CniWorkOptions {
  /** This agent's host: every attachment made here is on it. */
  host: string;
  /** Where the attachment records live (attachments.ts). */
  dataDir: string;
}

export type CniHandlers = { [K in LocalCall]: (request: LocalCalls[K]["request"]) => Promise<LocalCalls[K]["response"]> };

/** The CNI commands' work, done by the agent for the plugin: one function per call of the local API. */
export function cniHandlers(plane: ControlPlane, options: CniWorkOptions): CniHandlers {
  const work = new CniWork(plane, options);
  return {
    add: (request) => work.add(request),
    del: nothingMore((request) => work.release(request)),
    check: nothingMore((request) => work.check(request)),
    status: nothingMore((request) => work.status(request)),
    gc: nothingMore((request) => work.collect(request)),
  };
}

/** A command whose success carries no answer. */
function nothingMore<R>(work: (request: R) => Promise<void>): (request: R) => Promise<Record<string, never>> {
  return async (request) => {
    await work(request);
    return {};
  };
}

class CniWork {
  constructor(
    private readonly plane: ControlPlane,
    private readonly options: CniWorkOptions,
  ) {}

  /**
   * Records the attachment, attaches, and (for `trellis`) waits for this agent's report that the interface is
   * there. Any failure takes back everything it did, so that a failed ADD leaves nothing behind.
   */
  async add(request: AddRequest): Promise<AddResponse> {
    const { dataDir, host } = this.options;
    const record: AttachmentRecord = { containerId: request.containerId, ifname: request.ifname, container: request.container };
    const ipamOnly = request.role === "ipam";
    await saveRecord(dataDir, request.network, record);
    try {
      const endpoint = await this.plane.attach({
        network: request.network,
        container: request.container,
        host,
        ipv4: request.ipv4,
        ipv6: request.ipv6,
        netnsPath: request.netns,
        ifname: request.ifname,
        ipamOnly,
      });
      const response: AddResponse = {
        ips: endpoint.addresses.map((address) => ({ address, gateway: gatewayOf(endpoint, address) })),
        routes: endpoint.routes.map(({ dst, via, ipv6 }) => ({ dst, via, ipv6 })),
        nameservers: [HOST_DNS],
      };
      if (!ipamOnly) response.iface = await this.madeInterface(request, endpoint);
      return response;
    } catch (error) {
      // Nothing can have been attached when no planner was reached; otherwise DEL's way, and should that fail
      // too, the record stays for the runtime's DEL or GC to release what may be held.
      if ((error as CniError).details === NEVER_REACHED) await removeRecord(dataDir, request.network, record.containerId, record.ifname);
      else await this.release(request).catch(() => undefined);
      throw error;
    }
  }

  private async madeInterface(request: AddRequest, endpoint: Endpoint): Promise<{ name: string; mac: string; sandbox: string }> {
    let reported;
    try {
      reported = await this.plane.waitForAgent(endpoint);
    } catch (error) {
      throw new CniError(CniCode.agentTimeout, (error as Error).message);
    }
    if (reported.state === EndpointState.ENDPOINT_STATE_FAILED) {
      throw new CniError(CniCode.agentFailed, `failed to make ${request.ifname} in ${request.netns} on host ${this.options.host}: ${reported.message}`);
    }
    // The report names the MAC read from the kernel; iproute2 is asked only when it does not.
    const mac = reported.mac || (await readInterface(request.netns, request.ifname))?.mac || "";
    return { name: request.ifname, mac, sandbox: request.netns };
  }

  /**
   * DEL: detaches the recorded container (its address goes back to IPAM at once), waits a while for this agent to
   * take its link away, and forgets the record. Nothing recorded, or already detached: nothing to do.
   */
  async release(ref: AttachmentRef): Promise<void> {
    const { dataDir } = this.options;
    const record = await readRecord(dataDir, ref.network, ref.containerId, ref.ifname);
    if (!record) return;
    await this.plane.detach(record.container);
    // The runtime deletes the namespace next; the link (with the address just released) goes first.
    if (ref.role === "main") await this.plane.waitForRemoval(record.container, RELEASE_WAIT_MS);
    await removeRecord(dataDir, ref.network, ref.containerId, ref.ifname);
  }

  /** CHECK: the interface, its addresses and its default routes as the earlier result said. */
  async check(request: CheckRequest): Promise<void> {
    const record = await readRecord(this.options.dataDir, request.network, request.containerId, request.ifname);
    if (!record) throw new CniError(CniCode.unknownContainer, `container ${request.containerId} has no Trellis attachment ${request.ifname} on network ${request.network} here`);
    await this.plane.checkPlanner(request.network);
    if (request.role === "ipam") return;
    const view = await readInterface(request.netns, request.ifname);
    if (!view) throw new CniError(CniCode.checkMismatch, `interface ${request.ifname} is missing from ${request.netns}`);
    const missing = request.ips.filter((address) => !view.addresses.includes(address));
    const defaults = request.routes.filter((route) => route.dst === "0.0.0.0/0" || route.dst === "::/0");
    const missingRoutes = defaults.filter((route) => !view.defaultRoutes.some((present) => present.ipv6 === route.dst.includes(":") && present.via === (route.gw ?? "")));
    const problems = [
      ...missing.map((address) => `address ${address} is missing from ${request.ifname}`),
      ...missingRoutes.map((route) => `route ${route.dst}${route.gw ? ` via ${route.gw}` : ""} is missing`),
    ];
    if (problems.length > 0) throw new CniError(CniCode.checkMismatch, `${request.ifname} in ${request.netns} differs from its result: ${problems.join("; ")}`);
  }

  /** STATUS: the planner answers and NATS answers this agent; else 50, saying which is not there. */
  async status(request: StatusRequest): Promise<void> {
    try {
      await this.plane.checkPlanner(request.network);
    } catch (error) {
      const cause = error as CniError;
      // A missing network is the config's problem, not the plugin's availability: said as it is.
      if (cause.code === CniCode.refused) throw cause;
      throw new CniError(CniCode.notAvailable, `Trellis is not available: ${cause.message}`);
    }
    const problem = await this.plane.natsProblem();
    if (problem) throw new CniError(CniCode.notAvailable, `Trellis is not available on host ${this.options.host}: ${problem}`);
  }

  /** GC: releases every attachment this host holds on the network that the runtime no longer lists. */
  async collect(request: GcRequest): Promise<void> {
    const keep = new Set(request.valid.map((entry) => `${entry.containerId}/${entry.ifname}`));
    for (const record of await listRecords(this.options.dataDir, request.network)) {
      if (!keep.has(`${record.containerId}/${record.ifname}`)) await this.release({ network: request.network, role: request.role, containerId: record.containerId, ifname: record.ifname });
    }
  }
}

/** In l2 each address's default route goes via its subnet's gateway: the routes say which. */
function gatewayOf(endpoint: Endpoint, address: string): string {
  const ipv6 = address.includes(":");
  return endpoint.routes.find((route) => route.ipv6 === ipv6 && route.dst === "default")?.via ?? "";
}
