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
