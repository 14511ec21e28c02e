import { spawn } from "node:child_process";

const cli = new URL("../../dist/services/cli/main.js", import.meta.url).pathname;

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `trellis` command (npm run build makes it) as a user would, with `env` added. */
export function runTrellis(env: Record<string, string>, ...args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    // "close", not "exit": the output is complete only once both pipes are.
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}
