import type { AttachmentRoute } from "../link-agent/local-api/protocol.js";
import { CniCode, CniError } from "./errors.js";

/** The versions this plugin answers in; 0.3.0 and 0.3.1 share a result format, as do 1.0.0 and 1.1.0. */
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] as const;
export const LATEST_VERSION = "1.1.0";

/** One interface a result names; `sandbox` is the namespace path it is in. */
export interface ResultInterface {
  name: string;
  mac?: string;
  sandbox?: string;
}

/** What a Trellis attach comes to, before it is written out in the runtime's version. */
export interface Attachment {
  /** The interface Trellis made (absent for trellis-ipam, whose main plugin makes it). */
  iface?: ResultInterface;
  /** With prefix length, e.g. 192.168.20.5/24, each with the gateway of its subnet (empty in l3). */
  ips: { address: string; gateway: string }[];
  routes: AttachmentRoute[];
  nameservers: string[];
  /** The earlier plugins' result in a chain, whose interfaces come first. */
  prevResult?: Record<string, unknown>;
}

export function checkVersion(version: unknown): string {
  if (typeof version !== "string" || version === "") {
    throw new CniError(CniCode.invalidConfig, `invalid network config: "cniVersion" is missing; give one of ${SUPPORTED_VERSIONS.join(", ")}`);
  }
  if (!(SUPPORTED_VERSIONS as readonly string[]).includes(version)) {
    throw new CniError(CniCode.incompatibleVersion, `incompatible CNI version ${version}: trellis supports ${SUPPORTED_VERSIONS.join(", ")}`);
  }
  return version;
}

/** The result in the runtime's version: 0.3.x and 0.4.0 name each address's IP version, 1.x does not. */
export function formatResult(version: string, attachment: Attachment): Record<string, unknown> {
  const previous = attachment.prevResult ?? {};
  const interfaces = [...((previous.interfaces as ResultInterface[] | undefined) ?? [])];
  const index = attachment.iface ? interfaces.push(attachment.iface) - 1 : undefined;
  const legacy = version.startsWith("0.");
  const ips = attachment.ips.map(({ address, gateway }) => ({
    ...(legacy ? { version: address.includes(":") ? "6" : "4" } : {}),
    address,
    ...(gateway ? { gateway } : {}),
    ...(index === undefined ? {} : { interface: index }),
  }));
  const routes = attachment.routes.map((route) => ({ dst: routeDestination(route), ...(route.via ? { gw: route.via } : {}) }));
  return {
    cniVersion: version,
    ...(interfaces.length > 0 ? { interfaces } : {}),
    ips: [...((previous.ips as unknown[] | undefined) ?? []), ...ips],
    routes: [...((previous.routes as unknown[] | undefined) ?? []), ...routes],
    dns: { nameservers: attachment.nameservers },
  };
}

function routeDestination(route: AttachmentRoute): string {
  if (route.dst !== "default") return route.dst;
  return route.ipv6 ? "::/0" : "0.0.0.0/0";
}
