import { execFile } from "node:child_process";
import { promisify } from "node:util";

const run = promisify(execFile);

/** What the container's namespace has on one interface, as iproute2 reads it. */
export interface InterfaceView {
  mac: string;
  /** With prefix length, link-local ones left out. */
  addresses: string[];
  /** Default routes' next hops ("" for a device route), per family. */
  defaultRoutes: { via: string; ipv6: boolean }[];
}

interface IpAddressJson {
  address?: string;
  addr_info?: { local: string; prefixlen: number; scope?: string }[];
}

/**
 * Reads the interface from inside the runtime's namespace with iproute2 (`nsenter --net`): only a short-lived
 * ADD or CHECK does this, and the plugin then needs no native module of its own. undefined when it is not there.
 */
export async function readInterface(netns: string, ifname: string): Promise<InterfaceView | undefined> {
  const ip = (...args: string[]) => run("nsenter", [`--net=${netns}`, "ip", "-j", ...args]).then(({ stdout }) => JSON.parse(stdout || "[]") as unknown[]);
  let links: IpAddressJson[];
  try {
    links = (await ip("address", "show", "dev", ifname)) as IpAddressJson[];
  } catch {
    return undefined;
  }
  const link = links[0];
  if (!link) return undefined;
  const addresses = (link.addr_info ?? []).filter((info) => info.scope !== "link").map((info) => `${info.local}/${info.prefixlen}`);
  const defaults = async (family: "-4" | "-6") =>
    ((await ip(family, "route", "show", "default", "dev", ifname)) as { gateway?: string }[]).map((route) => ({ via: route.gateway ?? "", ipv6: family === "-6" }));
  return { mac: link.address ?? "", addresses, defaultRoutes: [...(await defaults("-4")), ...(await defaults("-6"))] };
}
