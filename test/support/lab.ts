import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { afterAll, beforeAll } from "vitest";
import { join } from "node:path";

const repo = new URL("../..", import.meta.url).pathname;
const cli = join(repo, "dist/bundle/trellis.js");

export interface LabResult {
  code: number;
  output: string;
  /** Output under each `=== label` line that the script printed (see lab/lib.sh), up to the next label or narration (`# ...`). */
  sections: Map<string, string>;
  /** The folder that was the lab's $TRELLIS_LAB_OUT (the spans are in trace.jsonl there). */
  outDir: string;
  /** One section's output; a missing section fails with the whole output, to see where the script went. */
  section(name: string): string;
}

export interface LabOptions {
  hosts?: number;
  upstreams?: number;
  routers?: number;
  tls?: boolean;
}

/** Runs a script in the lab (a real kernel with ipvlan, 802.1Q and dummy), through the real CLI. */
export async function runInLab(script: string, options: LabOptions = {}): Promise<LabResult> {
  // Not under /tmp: the lab kernel mounts its own tmpfs there and would hide the folder.
  const outDir = mkdtempSync(join(repo, "test/lab/.out-"));
  const args = [
    cli, "lab", "run", "--hosts", String(options.hosts ?? 2), "--upstreams", String(options.upstreams ?? 0), "--routers", String(options.routers ?? 0),
    "--out", outDir, ...(options.tls ? ["--tls"] : []), script,
  ];
  const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const code = await new Promise<number>((resolve) => child.on("exit", (status) => resolve(status ?? 1)));
  const sections = splitSections(output);
  const section = (name: string): string => {
    const text = sections.get(name);
    if (text === undefined) throw new Error(`the script printed no section ${name}; its output was:\n${output}`);
    return text;
  };
  return { code, output, sections, outDir, section };
}

/**
 * Boots the lab once for the enclosing describe block (beforeAll) and removes its output folder after (afterAll).
 * The run it answers is read by the tests only: before the boot, reading it throws.
 */
export function bootLab(script: string, options: LabOptions = {}): LabResult {
  let result: LabResult | undefined;
  beforeAll(async () => {
    result = await runInLab(script, options);
  });
  afterAll(() => {
    if (result) rmSync(result.outDir, { recursive: true, force: true });
  });
  const run = (): LabResult => {
    if (!result) throw new Error(`the lab of ${script} has not run yet`);
    return result;
  };
  return {
    get code() {
      return run().code;
    },
    get output() {
      return run().output;
    },
    get sections() {
      return run().sections;
    },
    get outDir() {
      return run().outDir;
    },
    section: (name) => run().section(name),
  };
}

export function splitSections(output: string): Map<string, string> {
  const sections = new Map<string, string>();
  let current: string | undefined;
  for (const line of output.split("\n")) {
    const label = /^=== (\S+)$/.exec(line);
    if (label) {
      current = label[1]!;
      sections.set(current, "");
    } else if (line.startsWith("# ")) {
      current = undefined;
    } else if (current !== undefined) {
      sections.set(current, `${sections.get(current)}${line}\n`);
    }
  }
  for (const [name, text] of sections) sections.set(name, text.replace(/\n+$/, "\n"));
  return sections;
}
