// No systemd runs these units here: this keeps the agent's unit, its BGP drop-in and the example
// /etc/default/trellis true to the CLI's parser.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { parseBgpOptions } from "../../services/link-agent/bgp/options.js";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const read = (path: string) => readFileSync(join(ROOT, "deploy/systemd", path), "utf8");

/** KEY=value lines of an EnvironmentFile. */
const defaults = new Map(
  read("trellis.default")
    .split("\n")
    .filter((line) => /^[A-Z_]+=/.test(line))
    .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)] as [string, string]),
);

function directives(unit: string, name: string): string[] {
  return [...unit.matchAll(new RegExp(`^${name}=(.*)$`, "gm"))].map((match) => match[1]!);
}

/** What systemd runs for an ExecStart line, with /etc/default/trellis's values and %H as "node1". */
function trellisArgv(execStart: string): string[] {
  const words = execStart.replaceAll("%H", "node1").replace(/\$\{(\w+)\}/g, (_, name: string) => {
    expect(defaults.has(name), `${name} is set in trellis.default`).toBe(true);
    return defaults.get(name)!;
  });
  const argv = words.split(/\s+/);
  expect(argv.slice(0, 2)).toEqual(["/usr/bin/env", "trellis"]);
  return argv.slice(2);
}

/** Every flag is one the command takes: the parser refuses the probe flag, and nothing before it. */
function expectFlagsTaken(argv: string[]): void {
  const bundle = join(ROOT, "dist/bundle/trellis.js");
  expect(existsSync(bundle), "dist/bundle/trellis.js: run `npm run build` first").toBe(true);
  const run = spawnSync(process.execPath, [bundle, ...argv, "--manifest-probe"], { encoding: "utf8" });
  expect(run.stderr).toContain("Unknown option '--manifest-probe'");
  expect(run.status).toBe(2);
}

describe("systemd units (deploy/systemd)", () => {
  it("start the agent with flags it takes", () => {
    const [execStart] = directives(read("trellis-agent.service"), "ExecStart");
    expectFlagsTaken(trellisArgv(execStart!));
  });

  it("turn on BGP with a drop-in whose AS and peer the agent's parser takes, and that leaves BIRD running on a restart", () => {
    const dropIn = read("trellis-agent.service.d/bgp.conf");
    // An empty ExecStart= first: a drop-in's ExecStart is otherwise added to the unit's, not put in its place.
    const [reset, execStart] = directives(dropIn, "ExecStart");
    expect(reset).toBe("");
    const argv = trellisArgv(execStart!);
    expectFlagsTaken(argv);
    const value = (flag: string) => argv.filter((arg) => arg.startsWith(`${flag}=`)).map((arg) => arg.slice(flag.length + 1));
    const options = parseBgpOptions(value("--bgp-as")[0], value("--bgp-peer"), value("--address"));
    expect(options?.peers.map((peer) => peer.address)).toEqual([defaults.get("TRELLIS_BGP_PEER")!.split(":")[0]]);
    expect(directives(dropIn, "KillMode")).toEqual(["process"]);
  });
});
