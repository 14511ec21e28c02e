#!/usr/bin/env node
// The `trellis` and `trellis-ipam` CNI plugins (one file, installed under both names by `trellis cni install`):
// a runtime runs it once per call, with the call in CNI_* variables and the network config on stdin. Bundled as
// CommonJS (scripts/bundle-cli.mjs): Node loads one CommonJS file with less work than its ES module loader.
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { isatty } from "node:tty";
import { runCommand } from "./commands.js";
import { CniCode, CniError } from "./errors.js";
import { parseInvocation, type PluginRole } from "./invocation.js";
import { LATEST_VERSION } from "./versions.js";

/** The network config, read at once from fd 0: process.stdin would build a stream for it, which costs start-up. */
async function readStdin(): Promise<string> {
  if (isatty(0)) return "";
  try {
    return readFileSync(0, "utf8");
  } catch (error) {
    // A stdin left non-blocking by whoever made it cannot be read synchronously: the stream waits for it. A closed
    // one is an empty config, which parseInvocation names.
    if ((error as NodeJS.ErrnoException).code !== "EAGAIN") return "";
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString("utf8");
  }
}

function roleOf(program: string): PluginRole {
  return basename(program).startsWith("trellis-ipam") ? "ipam" : "main";
}

/** Errors go on stdout as the spec says, in the config's version when it was read. */
function printError(error: CniError, version: string): void {
  const body = { cniVersion: version, code: error.code, msg: error.message, ...(error.details ? { details: error.details } : {}) };
  process.stdout.write(`${JSON.stringify(body)}\n`);
}

async function main(): Promise<number> {
  const stdin = await readStdin();
  let version = LATEST_VERSION;
  try {
    version = (JSON.parse(stdin) as { cniVersion?: string }).cniVersion || LATEST_VERSION;
  } catch {
    // parseInvocation says what is wrong with it
  }
  try {
    const result = await runCommand(parseInvocation(roleOf(process.argv[1] ?? ""), process.env, stdin));
    if (result) process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (error) {
    printError(error instanceof CniError ? error : new CniError(CniCode.internal, `failed to run the trellis CNI plugin: ${(error as Error).message}`), version);
    return 1;
  }
}

void main().then((code) => (process.exitCode = code));
