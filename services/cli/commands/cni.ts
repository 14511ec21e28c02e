import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { validateName } from "../../planner/validate.js";
import { parseCommand, UsageError } from "../parse.js";
import { settings } from "../settings.js";

const USAGE = `Usage: trellis cni install [--bin-dir=/opt/cni/bin] [--conf-dir=/etc/cni/net.d] [--name=CONF] NETWORK

Puts the trellis and trellis-ipam CNI plugins into the bin dir and writes CONF.conflist (default: the network's
name) for the Trellis network NETWORK into the conf dir, with this host's name (TRELLIS_HOST), the planner's
address (TRELLIS_PLANNER_ADDR) and NATS's (TRELLIS_NATS_URL) as they are set now.`;

/** Where the build put the plugin: beside the CLI's bundle (dist/bundle), or the tsc output (dist/services/cli/commands). */
function pluginSource(): string {
  const candidates = ["../cni/trellis-cni.mjs", "../../../cni/trellis-cni.mjs"].map((path) => fileURLToPath(new URL(path, import.meta.url)));
  const found = candidates.find((path) => existsSync(path));
  if (!found) throw new Error(`failed to find the CNI plugin (looked at ${candidates.join(", ")}): build it first (npm run build)`);
  return found;
}

export async function cniCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "install") throw new UsageError(sub ? `unknown cni command "${sub}"` : "missing cni command", USAGE);
  const { values, positionals } = parseCommand(rest, { "bin-dir": { type: "string" }, "conf-dir": { type: "string" }, name: { type: "string" } }, USAGE);
  if (positionals.length !== 1) throw new UsageError("give exactly one Trellis network", USAGE);
  const network = positionals[0]!;
  const name = values.name ?? network;
  validateName("network", network);
  validateName("conf", name);
  const binDir = values["bin-dir"] ?? "/opt/cni/bin";
  const confDir = values["conf-dir"] ?? "/etc/cni/net.d";
  await installPlugins(binDir);
  const conflist = join(confDir, `${name}.conflist`);
  await mkdir(confDir, { recursive: true });
  await writeFile(conflist, `${JSON.stringify(conflistOf(name, network), null, 2)}\n`);
  console.log(`installed ${join(binDir, "trellis")} and ${join(binDir, "trellis-ipam")}, and ${conflist} for network ${network}`);
  return 0;
}

/** The plugin under both names; its first line names this very Node, so that a runtime's PATH needs none. */
async function installPlugins(binDir: string): Promise<void> {
  const body = (await readFile(pluginSource(), "utf8")).replace(/^#!.*\n/, "");
  const program = `#!${process.execPath}\n${body}`;
  await mkdir(binDir, { recursive: true });
  for (const plugin of ["trellis", "trellis-ipam"]) {
    const path = join(binDir, plugin);
    await writeFile(path, program);
    await chmod(path, 0o755);
  }
}

/** A conflist of the trellis plugin alone: chain others (portmap, tuning, ...) after it in `plugins`. */
function conflistOf(name: string, network: string): Record<string, unknown> {
  return {
    cniVersion: "1.0.0",
    name,
    plugins: [{ type: "trellis", network, host: settings.host(), planner: settings.plannerAddress(), nats: settings.natsUrl(), capabilities: { ips: true } }],
  };
}
