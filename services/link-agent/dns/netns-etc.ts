import { mkdir, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * `ip netns exec NAME` (and so `trellis exec`) bind-mounts every file of /etc/netns/NAME over /etc: the
 * resolv.conf there sends the container's lookups to the agent's DNS server inside it.
 */
export const NETNS_ETC_DIR = "/etc/netns";

/**
 * Only loopback names: the containers' names come from the DNS server, and a hosts file listing them (as
 * agents before the DNS server wrote) would be read first and go stale.
 */
export const LOOPBACK_HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/**
 * Level-triggered: each file is rewritten only when its content is not what it should be, and replaced
 * whole (renamed into place), so that a lookup never reads it half written.
 */
export async function ensureNetnsEtc(etcDir: string, netns: string, files: Record<string, string>): Promise<void> {
  for (const [name, wanted] of Object.entries(files)) {
    const path = join(etcDir, netns, name);
    const current = await readFile(path, "utf8").catch(() => undefined);
    if (current === wanted) continue;
    try {
      await mkdir(join(etcDir, netns), { recursive: true });
      await writeFile(`${path}.new`, wanted);
      await rename(`${path}.new`, path);
    } catch (error) {
      throw new Error(`failed to write ${path} for namespace ${netns}: ${(error as Error).message}`);
    }
  }
}

/** Removes the /etc/netns folders of this host's containers that are gone, as their namespaces are. */
export async function removeStaleNetnsEtc(etcDir: string, host: string, keep: ReadonlySet<string>): Promise<void> {
  const present = await readdir(etcDir).catch(() => [] as string[]);
  for (const name of present.filter((name) => name.endsWith(`@${host}`) && !keep.has(name))) await removeNetnsEtc(etcDir, name);
}

/** Removes the /etc/netns folder of one container that is gone. */
export async function removeNetnsEtc(etcDir: string, netns: string): Promise<void> {
  await rm(join(etcDir, netns), { recursive: true, force: true });
}
