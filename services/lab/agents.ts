import { existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { AGENTS_DIR } from "./config.js";
import { isRunning, logSize, spawnLogged, stopProcess, waitForReady } from "./process.js";

/** How to run a host's link-agent again, and whether it runs now; one file per host under AGENTS_DIR. */
export interface AgentRecord {
  host: string;
  argv: string[];
  env: Record<string, string>;
  log: string;
  pid: number | null;
  state: "running" | "stopped";
}

export function writeAgentRecord(record: AgentRecord): void {
  const path = recordPath(record.host);
  // Renamed into place so that a reader never sees half a record.
  writeFileSync(`${path}.new`, JSON.stringify(record, null, 2));
  renameSync(`${path}.new`, path);
}

export function readAgentRecord(host: string): AgentRecord {
  const path = recordPath(host);
  if (!existsSync(path)) throw new Error(`no lab agent for host ${host} (no ${path})`);
  return JSON.parse(readFileSync(path, "utf8")) as AgentRecord;
}

function recordPath(host: string): string {
  if (!/^[A-Za-z0-9_.-]+$/.test(host)) {
    throw new Error(`host name must be letters, digits, "-", "_" or ".", received: ${host}`);
  }
  return join(AGENTS_DIR, `${host}.json`);
}

export async function stopAgent(host: string): Promise<void> {
  const record = readAgentRecord(host);
  if (record.pid !== null && isRunning(record.pid)) await stopProcess(record.pid);
  writeAgentRecord({ ...record, pid: null, state: "stopped" });
}

/** Starts a stopped agent again with its recorded argv and env, appending to its log, and waits for "ready". */
export async function startAgent(host: string): Promise<void> {
  const record = readAgentRecord(host);
  if (record.pid !== null && isRunning(record.pid)) {
    throw new Error(`the agent of ${host} is already running (pid ${record.pid})`);
  }
  const from = logSize(record.log);
  const child = spawnLogged(record.argv, record.env, record.log);
  child.unref();
  writeAgentRecord({ ...record, pid: child.pid ?? null, state: "running" });
  await waitForReady(`the agent of ${host}`, child, record.log, from);
}
