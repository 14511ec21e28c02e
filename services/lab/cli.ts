import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { startAgent, stopAgent } from "./agents.js";
import { LAB_FAILURE, MAX_HOSTS, MAX_UPSTREAMS } from "./config.js";
import { exitStatus } from "./process.js";
import { MAX_ROUTERS } from "./routers.js";
import { runLab, type LabRunOptions } from "./runner.js";
import { parseCommand, UsageError } from "../cli/parse.js";

const USAGE_ERROR = 2;
const DEFAULT_TIMEOUT_SECONDS = 20 * 60;

const LAB_USAGE = `usage:
  trellis lab run [--hosts N] [--upstreams M] [--routers R] [--out DIR] [--verbose] [--timeout SECONDS] [--tls] SCRIPT
  trellis lab agent stop|start HOST     (inside a lab)`;
const HOST_USAGE = "usage: trellis host exec HOST COMMAND [ARG...]     (inside a lab)";

/** `trellis lab ...`; argv is what follows the word "lab". Resolves with the process exit status. */
export async function runLabCommand(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === "run") return await runLab(parseLabRunArgs(rest));
    if (command === "agent") return await runAgentCommand(rest);
    throw new UsageError(command === undefined ? "missing lab command" : `unknown lab command: ${command}`, LAB_USAGE);
  } catch (error) {
    return reportError("lab", error);
  }
}

/** `trellis host exec HOST COMMAND ARG...`; argv is what follows the word "host". */
export async function runHostCommand(argv: string[]): Promise<number> {
  try {
    const [command, host, ...commandArgv] = argv;
    if (command !== "exec") {
      const problem = command === undefined ? "missing host command" : `unknown host command: ${command}`;
      throw new UsageError(problem, HOST_USAGE);
    }
    if (host === undefined || commandArgv.length === 0) {
      throw new UsageError("host exec needs a host and a command", HOST_USAGE);
    }
    if (!existsSync(`/run/netns/${host}`)) {
      throw new Error(`failed to run in host ${host}: no such lab host (no /run/netns/${host})`);
    }
    return await runInherited("ip", ["netns", "exec", host, ...commandArgv]);
  } catch (error) {
    return reportError("host", error);
  }
}

export function parseLabRunArgs(argv: string[]): LabRunOptions {
  const { values, positionals } = parseCommand(
    argv,
    {
      hosts: { type: "string" },
      upstreams: { type: "string" },
      routers: { type: "string" },
      out: { type: "string" },
      verbose: { type: "boolean" },
      timeout: { type: "string" },
      tls: { type: "boolean" },
    },
    LAB_USAGE,
  );
  if (positionals.length !== 1) {
    throw new UsageError(`lab run needs exactly one SCRIPT, received: ${positionals.length}`, LAB_USAGE);
  }
  return {
    script: positionals[0],
    hosts: count(values.hosts, "--hosts", 2, MAX_HOSTS),
    upstreams: count(values.upstreams, "--upstreams", 0, MAX_UPSTREAMS),
    routers: count(values.routers, "--routers", 0, MAX_ROUTERS),
    outDir: values.out,
    verbose: values.verbose ?? false,
    timeoutSeconds: count(values.timeout, "--timeout", DEFAULT_TIMEOUT_SECONDS, Number.MAX_SAFE_INTEGER, 1),
    tls: values.tls ?? false,
  };
}

function count(text: string | undefined, flag: string, fallback: number, max: number, min = 0): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw new UsageError(`${flag} must be a whole number between ${min}-${max}, received: ${text}`, LAB_USAGE);
  }
  return value;
}

async function runAgentCommand(argv: string[]): Promise<number> {
  const [action, host, ...extra] = argv;
  if ((action !== "stop" && action !== "start") || host === undefined || extra.length > 0) {
    throw new UsageError("lab agent needs stop or start and one HOST", LAB_USAGE);
  }
  if (process.env.TRELLIS_LAB !== "1") {
    throw new Error(`failed to ${action} the agent of ${host}: not inside a lab (TRELLIS_LAB=1)`);
  }
  try {
    await (action === "stop" ? stopAgent(host) : startAgent(host));
  } catch (error) {
    throw new Error(`failed to ${action} the agent of ${host}: ${(error as Error).message}`);
  }
  return 0;
}

async function runInherited(command: string, args: string[]): Promise<number> {
  const child = spawn(command, args, { stdio: "inherit" });
  return new Promise((resolve, reject) => {
    child.on("error", (error) => reject(new Error(`failed to run ${command}: ${error.message}`)));
    child.on("exit", (code, signal) => resolve(exitStatus(code, signal)));
  });
}

function reportError(command: string, error: unknown): number {
  if (error instanceof UsageError) {
    process.stderr.write(`trellis ${command}: ${error.message}\n${error.usage}\n`);
    return USAGE_ERROR;
  }
  process.stderr.write(`trellis ${command}: ${(error as Error).message}\n`);
  return LAB_FAILURE;
}
