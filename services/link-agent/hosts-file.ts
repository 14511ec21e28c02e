import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { Endpoint } from "../../libs/proto/gen/trellis/v1/network.js";
import type { NameEntry } from "../../libs/proto/gen/trellis/v1/state.js";

/**
 * `ip netns exec NAME` (and so `trellis exec`) bind-mounts every file of /etc/netns/NAME over /etc, so a
 * hosts file there is the container's /etc/hosts: how containers resolve each other by name, as Docker's
 * embedded resolution does, without a DNS server.
 */
export const NETNS_ETC_DIR = "/etc/netns";

/** The container's hosts file: loopback names, then every container of its network (itself included). */
export function hostsFileFor(endpoint: Endpoint, names: NameEntry[]): string {
  const lines = [
    `# Written by the Trellis agent for container ${endpoint.container} on network ${endpoint.networkName}.`,
    "127.0.0.1\tlocalhost",
    "::1\tlocalhost ip6-localhost ip6-loopback",
  ];
  for (const entry of names.filter((e) => e.networkId === endpoint.networkId)) {
    for (const address of entry.addresses) lines.push(`${address}\t${entry.name}`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Level-triggered: the file is rewritten only when its content is not what it should be, and replaced
 * whole (renamed into place), so that a lookup never reads it half written.
 */
export async function ensureHostsFile(etcDir: string, endpoint: Endpoint, names: NameEntry[]): Promise<void> {
  const path = join(etcDir, endpoint.netns, "hosts");
  const wanted = hostsFileFor(endpoint, names);
  const current = await readFile(path, "utf8").catch(() => undefined);
  if (current === wanted) return;
  try {
    await mkdir(join(etcDir, endpoint.netns), { recursive: true });
    await writeFile(`${path}.new`, wanted);
    await rename(`${path}.new`, path);
  } catch (error) {
    throw new Error(`failed to write the hosts file of ${endpoint.container} (${path}): ${(error as Error).message}`);
  }
}

/** The hosts folders of this host's containers (`NAME@HOST`), wanted or not. */
export async function hostsFolders(etcDir: string, host: string): Promise<string[]> {
  const present = await readdir(etcDir).catch(() => [] as string[]);
  return present.filter((name) => name.endsWith(`@${host}`));
}

/** Removes the hosts folder of a container that is gone, as its namespace is. */
export async function removeHostsFolder(etcDir: string, netns: string): Promise<void> {
  await rm(join(etcDir, netns), { recursive: true, force: true });
}
