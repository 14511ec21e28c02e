import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { validateName } from "../../planner/validate.js";
import { parseCommand, UsageError } from "../parse.js";
import { settings } from "../settings.js";

const USAGE = `Usage: trellis cni install [--bin-dir=/opt/cni/bin] [--conf-dir=/etc/cni/net.d] [--name=CONF] [--with-node] NETWORK

Puts the trellis and trellis-ipam CNI plugins into the bin dir and writes CONF.conflist (default: the network's
name) for the Trellis network NETWORK into the conf dir, naming the socket of this host's agent (TRELLIS_AGENT_SOCKET,
else /run/trellis/agent.sock), which does the plugins' work. --with-node copies this Node into the bin dir too, as
trellis-node, and the plugins run with it: for a node that has no Node of its own (Kubernetes' install step).`;

/** Where the build put the plugin: beside the CLI's bundle (dist/bundle), or the tsc output (dist/services/cli/commands). */
function pluginSource(): string {
  const candidates = ["../cni/trellis-cni.cjs", "../../../cni/trellis-cni.cjs"].map((path) => fileURLToPath(new URL(path, import.meta.url)));
  const found = candidates.find((path) => existsSync(path));
  if (!found) throw new Error(`failed to find the CNI plugin (looked at ${candidates.join(", ")}): build it first (npm run build)`);
  return found;
}

export async function cniCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "install") throw new UsageError(sub ? `unknown cni command "${sub}"` : "missing cni command", USAGE);
  const { values, positionals } = parseCommand(rest, { "bin-dir": { type: "string" }, "conf-dir": { type: "string" }, name: { type: "string" }, "with-node": { type: "boolean" } }, USAGE);
  if (positionals.length !== 1) throw new UsageError("give exactly one Trellis network", USAGE);
  const network = positionals[0]!;
  const name = values.name ?? network;
  validateName("network", network);
  validateName("conf", name);
  const binDir = values["bin-dir"] ?? "/opt/cni/bin";
  const confDir = values["conf-dir"] ?? "/etc/cni/net.d";
  await installPlugins(binDir, values["with-node"] ? await installNode(binDir) : process.execPath);
  const conflist = join(confDir, `${name}.conflist`);
  await mkdir(confDir, { recursive: true });
  await writeFile(conflist, `${JSON.stringify(conflistOf(name, network), null, 2)}\n`);
  console.log(`installed ${join(binDir, "trellis")} and ${join(binDir, "trellis-ipam")}, and ${conflist} for network ${network}`);
  return 0;
}

/** The plugin under both names; its first line names the Node it runs with, so that a runtime's PATH needs none. */
async function installPlugins(binDir: string, node: string): Promise<void> {
  const body = (await readFile(pluginSource(), "utf8")).replace(/^#!.*\n/, "");
  const program = `#!${node}\n${body}`;
  await mkdir(binDir, { recursive: true });
  for (const plugin of ["trellis", "trellis-ipam"]) {
    const path = join(binDir, plugin);
    await writeFile(path, program);
    await chmod(path, 0o755);
  }
}

/**
 * This Node's executable, as BIN-DIR/trellis-node: written beside and renamed over, so that a plugin running now
 * keeps its file. Node's binary needs glibc and libstdc++, which the usual node images (Debian, Ubuntu, RHEL) have.
 */
async function installNode(binDir: string): Promise<string> {
  const node = join(binDir, "trellis-node");
  await mkdir(binDir, { recursive: true });
  await copyFile(process.execPath, `${node}.new`);
  await chmod(`${node}.new`, 0o755);
  await rename(`${node}.new`, node);
  return node;
}

/** A conflist of the trellis plugin alone: chain others (portmap, tuning, ...) after it in `plugins`. */
function conflistOf(name: string, network: string): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name,
    plugins: [{ type: "trellis", network, socket: settings.agentSocket(), capabilities: { ips: true } }],
  };
}
