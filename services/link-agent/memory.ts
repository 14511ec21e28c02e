import { setFlagsFromString } from "node:v8";
import koffi from "koffi";

/** How often the agent hands back to the kernel the memory its C heap freed (a trim costs well under a millisecond). */
const TRIM_INTERVAL_MS = 10_000;

/**
 * Keeps V8's young generation at its initial size (one semi-space of 1 MB) for the agent's whole life. By default
 * it doubles under a burst of allocation (a host filling with containers) up to 16 MB per semi-space, and stays
 * there: about 30 MB of the agent's RSS at 200 containers, for garbage that a small space collects as well (more
 * often, each time as cheaply: a scavenge costs what survives it, not the space's size). The growth factor is one
 * of the few heap settings V8 reads while running, so the agent sets it itself, and no deployment has to pass a
 * Node flag.
 */
export function keepYoungGenerationSmall(): void {
  setFlagsFromString("--semi-space-growth-factor=1");
}

/** prctl's (linux/prctl.h). */
const PR_SET_THP_DISABLE = 41;
const PR_GET_THP_DISABLE = 42;
/** fcntl's (fcntl.h). */
const F_SETFD = 2;
/** One malloc arena: the agent has one JavaScript thread, and V8's and libuv's helpers malloc little. */
const ARENA_TUNABLE = "glibc.malloc.arena_max";
const ARENA_MAX = 1;

/**
 * Starts the agent's process image again (execve: the same pid, arguments, standard streams and environment) with two
 * settings that must be in place before any thread starts, so that a running process cannot take them itself:
 * - **One malloc arena** (GLIBC_TUNABLES). glibc gives each thread that mallocs an arena of its own; Node's eight
 *   helper threads made five, which kept 5 MB of freed fragments at 200 containers in the lab.
 * - **No transparent huge pages** (PR_SET_THP_DISABLE, kept across execve). Where THP is "always", a thread's stack
 *   that uses a few KB got a whole 2 MB page.
 * Together they took an agent at 200 containers from 81 to 72-74 MB (lab/bench-attach.sh). Returns when both are in
 * place already (the relaunched process; an operator's own arena setting is kept, not replaced), or when this libc
 * is not glibc (musl); it never returns after a successful execve.
 */
export function relaunchWithCompactMemory(): void {
  let libc: ReturnType<typeof koffi.load>;
  try {
    libc = koffi.load("libc.so.6");
  } catch {
    return;
  }
  const prctl = libc.func("int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)") as (...args: number[]) => number;
  const tunables = process.env.GLIBC_TUNABLES ?? "";
  const arenaSet = tunables.split(":").some((tunable) => tunable.startsWith(`${ARENA_TUNABLE}=`));
  if (arenaSet && prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) === 1) return;
  if (prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) !== 0) return;
  const env = { ...process.env, GLIBC_TUNABLES: arenaSet ? tunables : [tunables, `${ARENA_TUNABLE}=${ARENA_MAX}`].filter(Boolean).join(":") };
  const execve = libc.func("int execve(const char *, const char **, const char **)") as (path: string, argv: (string | null)[], envp: (string | null)[]) => number;
  const argv = [process.execPath, ...process.execArgv, ...process.argv.slice(1)];
  const envp = Object.entries(env).map(([name, value]) => `${name}=${value}`);
  // Node marks its standard streams close-on-exec at start-up (libuv's uv_disable_stdio_inheritance); the agent
  // started again must still write to them.
  const fcntl = libc.func("int fcntl(int, int, int)") as (fd: number, command: number, argument: number) => number;
  for (const fd of [0, 1, 2]) fcntl(fd, F_SETFD, 0);
  // Returns only on failure: the agent then runs as it is, with glibc's defaults.
  execve(process.execPath, [...argv, null], [...envp, null]);
}

/**
 * Every TRIM_INTERVAL_MS, asks glibc to give the kernel back the pages of its heaps that hold only freed memory
 * (malloc_trim). The agent's C heap (netlink replies, socket and file buffers, the addons' own) fills in bursts, a
 * host filling with containers, and empties again; glibc keeps what was freed for the process's next mallocs, so
 * without this the RSS stays at the burst's peak (an agent alone on this project's machine: 2 of its 23 MB of
 * anonymous memory given back by one trim). A libc without malloc_trim (musl) only skips it.
 */
export function returnFreedMemoryRegularly(): void {
  let trim: ((pad: number) => number) | undefined;
  try {
    trim = koffi.load("libc.so.6").func("int malloc_trim(size_t)") as (pad: number) => number;
  } catch {
    return;
  }
  setInterval(() => trim(0), TRIM_INTERVAL_MS).unref();
}
