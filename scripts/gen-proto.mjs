// Generates TypeScript for every file under proto/ into libs/proto/gen with ts-proto,
// using the protoc binary that ships inside the `protoc` npm package.
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync } from "node:fs";
import { join, relative } from "node:path";

const root = new URL("..", import.meta.url).pathname;
const protoDir = join(root, "proto");
const outDir = join(root, "libs/proto/gen");
const protocBin = join(root, "node_modules", ".bin", "protoc");
const plugin = join(root, "node_modules", ".bin", "protoc-gen-ts_proto");

function protoFiles(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) return protoFiles(path);
    return entry.name.endsWith(".proto") ? [relative(protoDir, path)] : [];
  });
}

rmSync(outDir, { recursive: true, force: true });
mkdirSync(outDir, { recursive: true });
execFileSync(protocBin, [
  `--plugin=protoc-gen-ts_proto=${plugin}`,
  `--ts_proto_out=${outDir}`,
  "--ts_proto_opt=outputServices=grpc-js,esModuleInterop=true,importSuffix=.js,useOptionals=messages,oneof=unions-value,env=node",
  `-I${protoDir}`,
  ...protoFiles(protoDir),
], { stdio: "inherit" });
