import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CniCode, CniError } from "../../cni/errors.js";

/** Where the attachment records live (as host-local keeps its leases under /var/lib/cni). */
export const DEFAULT_CNI_DATA_DIR = "/var/lib/cni/trellis";
/** Names another folder for them: the lab's, on the guest's own tmpfs rather than the machine's disk. */
export const CNI_DATA_DIR_ENV = "TRELLIS_CNI_DATA_DIR";

/**
 * What this host's CNI plugins attached, one small file per attachment: `<dataDir>/<network>/<container id>-<ifname>`,
 * holding the Trellis container's name. DEL and GC find their attachment here without asking the control plane to
 * search (nothing on a call's path grows with the cluster), and a DEL that comes without the ADD's CNI_ARGS still
 * knows the name. Written once, before the attach, so that an ADD cut short is still released by DEL or GC; the
 * name is all DEL needs (it waits for the container's status to go, host-statuses.ts). A record of an older agent
 * holds more fields, which are passed over.
 */
export interface AttachmentRecord {
  containerId: string;
  ifname: string;
  /** The Trellis container name. */
  container: string;
}

function folder(dataDir: string, network: string): string {
  return join(dataDir, network);
}

function fileOf(dataDir: string, network: string, containerId: string, ifname: string): string {
  return join(folder(dataDir, network), `${containerId}-${ifname}`);
}

export async function saveRecord(dataDir: string, network: string, record: AttachmentRecord): Promise<void> {
  try {
    await mkdir(folder(dataDir, network), { recursive: true });
    await writeFile(fileOf(dataDir, network, record.containerId, record.ifname), JSON.stringify(record));
  } catch (error) {
    throw new CniError(CniCode.ioFailure, `failed to record the attachment under ${dataDir}`, (error as Error).message);
  }
}

export async function readRecord(dataDir: string, network: string, containerId: string, ifname: string): Promise<AttachmentRecord | undefined> {
  try {
    return JSON.parse(await readFile(fileOf(dataDir, network, containerId, ifname), "utf8")) as AttachmentRecord;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new CniError(CniCode.ioFailure, `failed to read the attachment record of ${containerId} under ${dataDir}`, (error as Error).message);
  }
}

export async function removeRecord(dataDir: string, network: string, containerId: string, ifname: string): Promise<void> {
  await rm(fileOf(dataDir, network, containerId, ifname), { force: true });
}

/** Every attachment this host's plugin holds on the network: what GC compares with the runtime's list. */
export async function listRecords(dataDir: string, network: string): Promise<AttachmentRecord[]> {
  const names = await readdir(folder(dataDir, network)).catch(() => [] as string[]);
  const records = await Promise.all(names.map((name) => readFile(join(folder(dataDir, network), name), "utf8").then((text) => JSON.parse(text) as AttachmentRecord, () => undefined)));
  return records.filter((record): record is AttachmentRecord => record !== undefined);
}
