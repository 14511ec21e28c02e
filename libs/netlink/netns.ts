import { execFile } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, rmSync } from "node:fs";
import { isAbsolute, join } from "node:path";
import { promisify } from "node:util";
import koffi from "koffi";
import { netlinkError } from "./errors.js";
import { withSpan } from "../telemetry/tracing.js";

/** Where iproute2 keeps named namespaces, so `ip netns` and Trellis see the same ones. */
export const NETNS_RUN_DIR = "/run/netns";

const CLONE_NEWNET = 0x40000000;
const MS_BIND = 0x1000;
const MS_REC = 0x4000;
const MS_SHARED = 1 << 20;
const run = promisify(execFile);

interface Libc {
  setns(fd: number, nstype: number): number;
  unshare(flags: number): number;
  mount(source: string, target: string, type: string, flags: number, data: null): number;
}

let libc: Libc | undefined;

function loadLibc(): Libc {
  if (!libc) {
    const library = koffi.load("libc.so.6");
    libc = {
      setns: library.func("int setns(int, int)") as Libc["setns"],
      unshare: library.func("int unshare(int)") as Libc["unshare"],
      mount: library.func("int mount(const char *, const char *, const char *, unsigned long, const void *)") as Libc["mount"],
    };
  }
  return libc;
}

/** A libc call returns non-zero on failure, with the reason in errno. */
function check(call: string, result: number): void {
  if (result === 0) return;
  const errno = koffi.errno();
  const code = Object.entries(koffi.os.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`;
  throw Object.assign(new Error(`${call}: ${code}`), { code });
}

function setns(fd: number): void {
  check("setns", loadLibc().setns(fd, CLONE_NEWNET));
}

/** A name resolves under /run/netns; an absolute path (e.g. /proc/<pid>/ns/net) is used as is. */
export function namespacePath(name: string): string {
  return isAbsolute(name) ? name : join(NETNS_RUN_DIR, name);
}

export function namespaceExists(name: string): boolean {
  return existsSync(namespacePath(name));
}

/** Opens the namespace file; the caller closes the descriptor. */
export function openNamespace(name: string): number {
  try {
    return openSync(namespacePath(name), "r");
  } catch (cause) {
    throw netlinkError(`open network namespace ${name}`, cause);
  }
}

/**
 * Runs `fn` with the calling thread inside namespace `name`, then returns to the original one.
 * Only for synchronous work such as creating a socket: a socket stays in the namespace it was created
 * in, and nothing else can run on the main thread while it is switched, so no other code is misplaced.
 */
export function inNamespace<T>(name: string, fn: () => T): T {
  return awayFromHome(() => {
    const target = openNamespace(name);
    try {
      setns(target);
    } catch (cause) {
      throw netlinkError(`enter network namespace ${name}`, cause);
    } finally {
      closeSync(target);
    }
  }, fn);
}

/**
 * Runs `fn` with the calling thread inside a new, empty network namespace, then returns to the original
 * one; synchronous work only, as for inNamespace. The namespace has no name under /run/netns: it lives
 * as long as something made in it (a socket) is open, and the kernel removes it with all it holds once
 * that is closed, even if the process dies first. Nothing is left behind to clean up.
 */
export function inNewNamespace<T>(fn: () => T): T {
  return awayFromHome(() => {
    try {
      check("unshare", loadLibc().unshare(CLONE_NEWNET));
    } catch (cause) {
      throw netlinkError("create a network namespace", cause);
    }
  }, fn);
}

/** `enter` moves the calling thread to another namespace; `fn` runs there, and the thread comes back. */
function awayFromHome<T>(enter: () => void, fn: () => T): T {
  // The thread's own namespace, not the process's: setns and unshare affect only the calling thread.
  const home = openNamespace("/proc/thread-self/ns/net");
  try {
    enter();
    try {
      return fn();
    } finally {
      // Failing to come back would leave the whole process in the wrong namespace: nothing can recover.
      try {
        setns(home);
      } catch (cause) {
        process.emitWarning(`trellis: cannot return to the original network namespace: ${String(cause)}`);
        process.abort();
      }
    }
  } finally {
    closeSync(home);
  }
}

/**
 * Creates /run/netns/<name> as `ip netns add` does, in-process: a new namespace bind-mounted on a file of a
 * shared-propagation /run/netns, so that `ip netns` and Trellis see the same ones. (Spawning `ip` cost about a
 * second per container in the emulated lab, most of an attach.)
 */
export async function createNamespace(name: string): Promise<void> {
  await withSpan("netlink.netns.create", { netns: name }, async () => {
    try {
      const path = namespacePath(name);
      shareRunDir();
      closeSync(openSync(path, "wx", 0o444)); // EEXIST: a namespace of that name exists
      try {
        inNewNamespace(() => check("mount", loadLibc().mount("/proc/thread-self/ns/net", path, "none", MS_BIND, null)));
      } catch (cause) {
        rmSync(path, { force: true });
        throw cause;
      }
    } catch (cause) {
      throw netlinkError(`create network namespace ${name}`, cause);
    }
  });
}

/**
 * /run/netns as iproute2 keeps it: a mount point with shared propagation, so that a namespace mounted there
 * shows in every mount namespace (a bind mount of itself first, if it is none yet).
 */
function shareRunDir(): void {
  mkdirSync(NETNS_RUN_DIR, { recursive: true, mode: 0o755 });
  if (loadLibc().mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, null) === 0) return;
  check("mount", loadLibc().mount(NETNS_RUN_DIR, NETNS_RUN_DIR, "none", MS_BIND | MS_REC, null));
  check("mount", loadLibc().mount("", NETNS_RUN_DIR, "none", MS_SHARED | MS_REC, null));
}

export async function deleteNamespace(name: string): Promise<void> {
  await withSpan("netlink.netns.delete", { netns: name }, async () => {
    if (!namespaceExists(name)) {
      throw netlinkError(`delete network namespace ${name}`, Object.assign(new Error("no such namespace"), { code: "ENOENT" }));
    }
    try {
      await run("ip", ["netns", "delete", name]);
    } catch (cause) {
      throw netlinkError(`delete network namespace ${name}`, ipCause(cause));
    }
  });
}

/** `ip` reports the errno only as text on stderr; map the cases callers branch on. */
function ipCause(cause: unknown): Error {
  const stderr = String((cause as { stderr?: unknown }).stderr ?? "").trim();
  const code = /File exists/.test(stderr) ? "EEXIST" : /No such file/.test(stderr) ? "ENOENT" : /Operation not permitted/.test(stderr) ? "EPERM" : undefined;
  return Object.assign(new Error(stderr || String(cause)), code ? { code } : {});
}
