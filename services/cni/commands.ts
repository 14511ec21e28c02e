import { EndpointState } from "../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import { listRecords, readRecord, removeRecord, saveRecord, type AttachmentRecord } from "./attachments.js";
import { NEVER_REACHED, TrellisConnection } from "./control-plane.js";
import { CniCode, CniError } from "./errors.js";
import { containerName, staticAddresses, type Invocation } from "./invocation.js";
import { readInterface } from "./kernel.js";
import { formatResult, LATEST_VERSION, SUPPORTED_VERSIONS, type Attachment } from "./versions.js";

/** The host's DNS server, in every container namespace the agent serves (README, "The DNS server"). */
const HOST_DNS = "127.0.0.11";
/** STATUS must answer quickly: a runtime asks it before it schedules work. */
const STATUS_TIMEOUT_MS = 3_000;
/** How long DEL waits for the agent to take the link away before it answers all the same (the address is released). */
const RELEASE_WAIT_MS = 20_000;

/** Runs one command; what it prints on stdout (the result, or nothing). */
export async function runCommand(invocation: Invocation): Promise<Record<string, unknown> | undefined> {
  if (invocation.command === "VERSION") return { cniVersion: LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS };
  const connection = new TrellisConnection(invocation, invocation.command === "STATUS" ? STATUS_TIMEOUT_MS : undefined);
  try {
    switch (invocation.command) {
      case "ADD":
        return await add(invocation, connection);
      case "DEL":
        await release(invocation, connection, invocation.containerId, invocation.ifname);
        return undefined;
      case "CHECK":
        await check(invocation, connection);
        return undefined;
      case "STATUS":
        await status(connection);
        return undefined;
      case "GC":
        await collect(invocation, connection);
        return undefined;
    }
  } finally {
    await connection.close();
  }
}

/**
 * Records the attachment, attaches, and (for `trellis`) waits for the agent's report that the interface is there.
 * Any failure takes back everything it did, so that a failed ADD leaves nothing behind.
 */
async function add(invocation: Invocation, connection: TrellisConnection): Promise<Record<string, unknown>> {
  const record: AttachmentRecord = { containerId: invocation.containerId, ifname: invocation.ifname, container: containerName(invocation) };
  const ipamOnly = invocation.role === "ipam";
  await saveRecord(invocation.dataDir, invocation.network, record);
  try {
    const endpoint = await connection.attach({
      network: invocation.network,
      container: record.container,
      host: invocation.host,
      ...staticAddresses(invocation),
      netnsPath: invocation.netns,
      ifname: invocation.ifname,
      ipamOnly,
    });
    const attachment: Attachment = {
      ips: endpoint.addresses.map((address) => ({ address, gateway: gatewayOf(endpoint, address) })),
      routes: endpoint.routes,
      nameservers: [HOST_DNS],
      prevResult: invocation.config.prevResult as Record<string, unknown> | undefined,
    };
    await saveRecord(invocation.dataDir, invocation.network, { ...record, endpointId: endpoint.id, host: endpoint.host });
    if (!ipamOnly) attachment.iface = await madeInterface(invocation, connection, endpoint);
    return formatResult(invocation.version, attachment);
  } catch (error) {
    // Nothing can have been attached when no planner was reached; otherwise DEL's way, and should that fail
    // too, the record stays for the runtime's DEL or GC to release what may be held.
    if ((error as CniError).details === NEVER_REACHED) await removeRecord(invocation.dataDir, invocation.network, record.containerId, record.ifname);
    else await release(invocation, connection, record.containerId, record.ifname).catch(() => undefined);
    throw error;
  }
}

/** In l2 each address's default route goes via its subnet's gateway: the routes say which. */
function gatewayOf(endpoint: Endpoint, address: string): string {
  const ipv6 = address.includes(":");
  return endpoint.routes.find((route) => route.ipv6 === ipv6 && route.dst === "default")?.via ?? "";
}

async function madeInterface(invocation: Invocation, connection: TrellisConnection, endpoint: Endpoint): Promise<{ name: string; mac: string; sandbox: string }> {
  let reported;
  try {
    reported = await connection.waitForAgent(endpoint, false);
  } catch (error) {
    throw new CniError(CniCode.agentTimeout, (error as Error).message);
  }
  if (reported?.state === EndpointState.ENDPOINT_STATE_FAILED) {
    throw new CniError(CniCode.agentFailed, `failed to make ${invocation.ifname} in ${invocation.netns} on host ${invocation.host}: ${reported.message}`);
  }
  // The agent's report names the MAC it read from the kernel; iproute2 is asked only when it does not (older agents).
  const mac = reported?.mac || (await readInterface(invocation.netns, invocation.ifname))?.mac || "";
  return { name: invocation.ifname, mac, sandbox: invocation.netns };
}

/**
 * DEL: detaches the recorded container (its address goes back to IPAM at once), waits a while for the agent to
 * take its link away, and forgets the record. Nothing recorded, or already detached: nothing to do.
 */
async function release(invocation: Invocation, connection: TrellisConnection, containerId: string, ifname: string): Promise<void> {
  const record = await readRecord(invocation.dataDir, invocation.network, containerId, ifname);
  if (!record) return;
  await connection.detach(record.container);
  // The runtime deletes the namespace next; the link (with the address just released) goes first.
  if (invocation.role === "main" && record.endpointId && record.host) await connection.waitForRemoval(record.endpointId, record.host, RELEASE_WAIT_MS);
  await removeRecord(invocation.dataDir, invocation.network, containerId, ifname);
}

/** CHECK: the interface, its addresses and its default routes as the earlier result said. */
async function check(invocation: Invocation, connection: TrellisConnection): Promise<void> {
  const previous = invocation.config.prevResult as { ips?: { address: string }[]; routes?: { dst: string; gw?: string }[] } | undefined;
  if (!previous) throw new CniError(CniCode.invalidConfig, "invalid network config for CHECK: prevResult is missing (the runtime passes the ADD's result)");
  const record = await readRecord(invocation.dataDir, invocation.network, invocation.containerId, invocation.ifname);
  if (!record) throw new CniError(CniCode.unknownContainer, `container ${invocation.containerId} has no Trellis attachment ${invocation.ifname} on network ${invocation.network} here`);
  await connection.checkPlanner();
  if (invocation.role === "ipam") return;
  const view = await readInterface(invocation.netns, invocation.ifname);
  if (!view) throw new CniError(CniCode.checkMismatch, `interface ${invocation.ifname} is missing from ${invocation.netns}`);
  const missing = (previous.ips ?? []).map((ip) => ip.address).filter((address) => !view.addresses.includes(address));
  const defaults = (previous.routes ?? []).filter((route) => route.dst === "0.0.0.0/0" || route.dst === "::/0");
  const missingRoutes = defaults.filter((route) => !view.defaultRoutes.some((present) => present.ipv6 === route.dst.includes(":") && present.via === (route.gw ?? "")));
  const problems = [
    ...missing.map((address) => `address ${address} is missing from ${invocation.ifname}`),
    ...missingRoutes.map((route) => `route ${route.dst}${route.gw ? ` via ${route.gw}` : ""} is missing`),
  ];
  if (problems.length > 0) throw new CniError(CniCode.checkMismatch, `${invocation.ifname} in ${invocation.netns} differs from its result: ${problems.join("; ")}`);
}

/** STATUS: the planner answers and this host's agent reports; else 50, saying which is not there. */
async function status(connection: TrellisConnection): Promise<void> {
  try {
    await connection.checkPlanner();
    const problem = await connection.agentProblem();
    if (problem) throw new CniError(CniCode.notAvailable, `Trellis is not available on this host: ${problem}`);
  } catch (error) {
    const cause = error as CniError;
    if (cause.code === CniCode.notAvailable) throw cause;
    // A missing network is the config's problem, not the plugin's availability: said as it is.
    if (cause.code === CniCode.refused) throw cause;
    throw new CniError(CniCode.notAvailable, `Trellis is not available: ${cause.message}`);
  }
}

/** GC: releases every attachment this host's plugin holds on the network that the runtime no longer lists. */
async function collect(invocation: Invocation, connection: TrellisConnection): Promise<void> {
  const valid = invocation.config["cni.dev/valid-attachments"];
  if (!Array.isArray(valid)) throw new CniError(CniCode.invalidConfig, `invalid network config for GC: "cni.dev/valid-attachments" must be a list of {containerID, ifname}`);
  const keep = new Set(valid.map((entry: { containerID?: string; ifname?: string }) => `${entry.containerID}/${entry.ifname}`));
  for (const record of await listRecords(invocation.dataDir, invocation.network)) {
    if (!keep.has(`${record.containerId}/${record.ifname}`)) await release(invocation, connection, record.containerId, record.ifname);
  }
}
