import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

/** The built CLI, from this file as vitest runs it (test/support/) or as the benchmarks do (dist/test/support/). */
const TRELLIS_CLI = fileURLToPath(new URL(import.meta.url.includes("/dist/") ? "../../bundle/trellis.js" : "../../dist/bundle/trellis.js", import.meta.url));
const START_TIMEOUT_MS = 30_000;

/** `trellis ipam`, `trellis planner` or `trellis agent` as an operator starts it, in its own process. */
export interface ServiceProcess {
  /** What its ready line names: HOST:PORT for ipam and planner, the host for an agent. */
  address: string;
  pid: number;
  /** What it printed up to its ready line. */
  startOutput: string;
  /** SIGTERM, and wait for the exit. */
  stop(): Promise<void>;
  /** SIGKILL, as a crash would, and wait for the exit. */
  kill(): Promise<void>;
}

export interface ServiceOptions {
  /** Node's own flags, e.g. --cpu-prof. */
  nodeOptions?: string[];
  /** Added to the environment. */
  env?: Record<string, string>;
  /** Each line the service prints after its ready line; dropped when absent. */
  onLine?: (line: string) => void;
}

/**
 * Starts `trellis <command> <args>` from the build and resolves on its ready line ("<command> ready on HOST:PORT",
 * an agent's "agent ready for host NAME").
 * Trace exporters that the caller's environment may name are removed (they would measure the exporter), unless
 * `options.env` names them.
 */
export async function startService(command: "ipam" | "planner" | "agent", args: string[], options: ServiceOptions = {}): Promise<ServiceProcess> {
  const env: NodeJS.ProcessEnv = { ...process.env };
  delete env.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete env.TRELLIS_TRACE_FILE;
  Object.assign(env, options.env);
  // Many services run at once in tests: none takes its default metrics port unless the test asks for one.
  const metrics = args.some((arg) => arg.startsWith("--metrics")) ? [] : ["--metrics=off"];
  const child = spawn(process.execPath, [...(options.nodeOptions ?? []), TRELLIS_CLI, command, ...args, ...metrics], { env, stdio: ["ignore", "pipe", "pipe"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const signal = async (name: NodeJS.Signals) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(name);
    await exited;
  };
  let output = "";
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`trellis ${command} printed no ready line within ${START_TIMEOUT_MS} ms: ${output}`)), START_TIMEOUT_MS);
    const onOutput = (chunk: Buffer) => {
      output += chunk.toString();
      const ready = new RegExp(`${command} ready ${command === "agent" ? "for host" : "on"} (\\S+)`).exec(output);
      if (ready) {
        clearTimeout(timer);
        afterReady(output.slice(ready.index + ready[0].length));
        resolve(ready[1]!);
      }
    };
    // Once ready, its output is only passed on: kept, a chatty service would fill the memory.
    const afterReady = (rest: string) => {
      child.stdout.off("data", onOutput).resume();
      child.stderr.off("data", onOutput).resume();
      if (!options.onLine) return;
      let partial = rest.replace(/^[^\n]*\n?/, "");
      const onChunk = (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split("\n");
        partial = lines.pop() ?? "";
        for (const line of lines) options.onLine!(line);
      };
      onChunk(Buffer.alloc(0));
      child.stdout.on("data", onChunk);
      child.stderr.on("data", onChunk);
    };
    child.stdout.on("data", onOutput);
    child.stderr.on("data", onOutput);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`trellis ${command} exited with ${code} before it was ready: ${output.trim()}`));
    });
  }).catch(async (error: unknown) => {
    await signal("SIGKILL");
    throw error;
  });
  return { address, pid: child.pid!, startOutput: output, stop: () => signal("SIGTERM"), kill: () => signal("SIGKILL") };
}
