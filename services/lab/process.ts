import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readFileSync, statSync } from "node:fs";
import { constants } from "node:os";
import { setTimeout as sleep } from "node:timers/promises";

/** Generous: a node service needs 20-40 s to start under emulation on a busy two-core machine. */
export const READY_TIMEOUT_MS = 180_000;
const STOP_GRACE_MS = 5_000;
const POLL_MS = 100;

/** Starts argv in its own process group with stdout and stderr appended to logPath. */
export function spawnLogged(argv: string[], env: NodeJS.ProcessEnv, logPath: string): ChildProcess {
  const log = openSync(logPath, "a");
  try {
    const child = spawn(argv[0], argv.slice(1), { env, detached: true, stdio: ["ignore", log, log] });
    // A failed spawn leaves pid unset, which waitForReady reports; unheard, the error event would throw.
    child.on("error", () => undefined);
    return child;
  } finally {
    closeSync(log);
  }
}

export function logSize(logPath: string): number {
  return existsSync(logPath) ? statSync(logPath).size : 0;
}

/**
 * Waits until the log, after byte offset `from`, has a line with the word "ready" (what every lab
 * service prints once it serves). Fails early when the process exits first.
 */
export async function waitForReady(
  name: string,
  child: ChildProcess,
  logPath: string,
  from: number,
  timeoutMs = READY_TIMEOUT_MS,
): Promise<void> {
  if (child.pid === undefined) throw new Error(`failed to start ${name}: could not execute ${child.spawnfile}`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (/\bready\b/i.test(readFileSync(logPath).subarray(from).toString())) return;
    if (child.exitCode !== null || child.signalCode !== null) {
      const how = child.exitCode !== null ? `status ${child.exitCode}` : `signal ${child.signalCode}`;
      throw new Error(`failed to start ${name}: it exited with ${how} before printing "ready"\n${logTail(logPath)}`);
    }
    if (Date.now() > deadline) {
      throw new Error(`failed to start ${name}: no "ready" in its log after ${timeoutMs / 1000} s\n${logTail(logPath)}`);
    }
    await sleep(POLL_MS);
  }
}

export function logTail(logPath: string, lines = 40): string {
  const text = existsSync(logPath) ? readFileSync(logPath, "utf8") : "";
  const tail = text.split("\n").filter((line, index, all) => line !== "" || index < all.length - 1).slice(-lines);
  return [`--- ${logPath} (last ${lines} lines) ---`, ...tail, "---"].join("\n");
}

/** True while pid runs; a zombie (exited, not yet reaped) counts as gone. */
export function isRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2)[0] !== "Z";
  } catch {
    return false; // reaped between the two looks
  }
}

/** SIGTERM, then SIGKILL if it has not exited after a grace period. */
export async function stopProcess(pid: number, graceMs = STOP_GRACE_MS): Promise<void> {
  signal(pid, "SIGTERM");
  if (await exited(pid, graceMs)) return;
  signal(pid, "SIGKILL");
  if (!(await exited(pid, graceMs))) throw new Error(`failed to stop process ${pid}: still running after SIGKILL`);
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

async function exited(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isRunning(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(POLL_MS);
  }
  return true;
}

/** A shell's view of how a process ended: its code, or 128 + the signal number. */
export function exitStatus(code: number | null, signal: NodeJS.Signals | null): number {
  return code ?? 128 + (signal ? constants.signals[signal] : 0);
}
