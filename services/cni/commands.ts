import { callAgent } from "./agent-client.js";
import { CniCode, CniError } from "./errors.js";
import { containerName, staticAddresses, type Invocation } from "./invocation.js";
import { formatResult, LATEST_VERSION, SUPPORTED_VERSIONS } from "./versions.js";

/**
 * Runs one command; what it prints on stdout (the result, or nothing). The work is the host's agent's, over its
 * local socket: the plugin reads the runtime's call, asks, and writes the answer in the runtime's version.
 */
export async function runCommand(invocation: Invocation): Promise<Record<string, unknown> | undefined> {
  const { socket, network, role, containerId, ifname, netns } = invocation;
  const ref = { network, role, containerId, ifname };
  switch (invocation.command) {
    case "VERSION":
      return { cniVersion: LATEST_VERSION, supportedVersions: SUPPORTED_VERSIONS };
    case "ADD": {
      const attached = await callAgent(socket, "add", { ...ref, netns, container: containerName(invocation), ...staticAddresses(invocation) });
      return formatResult(invocation.version, { ...attached, prevResult: invocation.config.prevResult as Record<string, unknown> | undefined });
    }
    case "DEL":
      await callAgent(socket, "del", ref);
      return undefined;
    case "CHECK":
      await callAgent(socket, "check", { ...ref, netns, ...previousResult(invocation) });
      return undefined;
    case "STATUS":
      await callAgent(socket, "status", { network });
      return undefined;
    case "GC":
      await callAgent(socket, "gc", { network, role, valid: validAttachments(invocation) });
      return undefined;
  }
}

/** CHECK compares the kernel with the ADD's result, which the runtime passes as prevResult. */
function previousResult(invocation: Invocation): { ips: string[]; routes: { dst: string; gw?: string }[] } {
  const previous = invocation.config.prevResult as { ips?: { address?: unknown }[]; routes?: { dst?: unknown; gw?: unknown }[] } | undefined;
  if (!previous) throw new CniError(CniCode.invalidConfig, "invalid network config for CHECK: prevResult is missing (the runtime passes the ADD's result)");
  const ips = (previous.ips ?? []).map((ip) => ip.address).filter((address): address is string => typeof address === "string");
  const routes = (previous.routes ?? []).filter((route) => typeof route.dst === "string").map((route) => ({ dst: route.dst as string, ...(typeof route.gw === "string" ? { gw: route.gw } : {}) }));
  return { ips, routes };
}

function validAttachments(invocation: Invocation): { containerId: string; ifname: string }[] {
  const valid = invocation.config["cni.dev/valid-attachments"];
  if (!Array.isArray(valid)) throw new CniError(CniCode.invalidConfig, `invalid network config for GC: "cni.dev/valid-attachments" must be a list of {containerID, ifname}`);
  return valid.map((entry: { containerID?: unknown; ifname?: unknown }) => ({ containerId: String(entry.containerID ?? ""), ifname: String(entry.ifname ?? "") }));
}
