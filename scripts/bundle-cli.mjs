// Bundles the trellis CLI (and through it every service), and bench:attach's program that runs in the lab,
// into a few files under dist/bundle. In the emulated lab kernel each module file a process opens costs dearly;
// one bundle per command starts many times faster than the hundreds of files tsc's output and node_modules would load.
import { rmSync } from "node:fs";
import { build } from "esbuild";

// Chunk names are content hashes: without this, every build would leave the last one's chunks behind.
rmSync("dist/bundle", { recursive: true, force: true });

await build({
  entryPoints: { trellis: "services/cli/main.ts", "bench-attach": "bench/attach.ts" },
  outdir: "dist/bundle",
  bundle: true,
  splitting: true,
  format: "esm",
  platform: "node",
  target: "node20",
  sourcemap: true,
  // No comments or layout: V8 keeps each module's source for the process's life (3 MB of the agent's heap), and one
  // non-ASCII character in a comment makes it keep a whole chunk as two bytes a character. Names stay, so that stack
  // traces still read; `node --enable-source-maps` maps them back to the TypeScript.
  minifyWhitespace: true,
  minifySyntax: true,
  // Native addons stay in node_modules, where their prebuilt binaries are found.
  external: ["netlink", "koffi"],
  // Some dependencies are CommonJS and call require(); give the ESM bundle one.
  banner: { js: 'import { createRequire as trellisCreateRequire } from "node:module"; const require = trellisCreateRequire(import.meta.url);' },
  logLevel: "warning",
});

// The CNI plugin: one small self-contained file, as `trellis cni install` copies it into a runtime's plugin folder and
// a runtime starts it once per call, where start-up is the cost that counts. It asks the host's agent over a local
// socket (services/link-agent/local-api), so it needs Node's built-ins alone: the build fails if anything else gets in.
// CommonJS: Node runs one such file without its ES module loader, and an installed copy, which has no extension and
// no package.json beside it, is CommonJS to Node anyway (an ES module there is parsed twice, where Node detects it).
rmSync("dist/cni", { recursive: true, force: true });
const plugin = await build({
  entryPoints: { "trellis-cni": "services/cni/main.ts" },
  outdir: "dist/cni",
  outExtension: { ".js": ".cjs" },
  bundle: true,
  format: "cjs",
  platform: "node",
  target: "node20",
  minify: true,
  metafile: true,
  logLevel: "warning",
});
const packages = Object.keys(plugin.metafile.inputs).filter((input) => input.includes("node_modules/"));
if (packages.length > 0) {
  throw new Error(`the CNI plugin's bundle must hold Node's built-ins only, but it takes in ${packages.join(", ")}: keep the plugin's imports to services/cni and services/link-agent/local-api/protocol.ts`);
}
