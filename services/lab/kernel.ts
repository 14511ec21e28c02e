import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { newcArchive, type ArchiveEntry } from "./newc.js";

const MODULES_ROOT = "/lib/modules";
const BUSYBOX = "/bin/busybox";
const BUSYBOX_APPLETS = ["sh", "insmod", "mount", "umount", "switch_root", "mkdir"];
export const LAB_PACKAGES = "qemu-system-x86 linux-image-amd64 busybox-static nats-server iproute2 iputils-ping kmod";

/** What the initramfs needs to mount the host's root over virtio-9p; dependencies are added from modules.dep. */
const ROOT_MODULES = ["virtio_pci", "9pnet_virtio", "9p"];

export interface LabKernel {
  version: string;
  vmlinuz: string;
  modulesDir: string;
}

/** The newest installed kernel that has both its modules and a bootable image. */
export function findKernel(): LabKernel {
  const versions = existsSync(MODULES_ROOT) ? readdirSync(MODULES_ROOT) : [];
  const bootable = versions
    .filter((version) => existsSync(`/boot/vmlinuz-${version}`))
    .sort((a, b) => b.localeCompare(a, undefined, { numeric: true }));
  if (bootable.length === 0) {
    throw new Error(
      `failed to find a lab kernel: no /boot/vmlinuz-<version> with modules under ${MODULES_ROOT} ` +
        `(install the Debian packages: apt-get install -y ${LAB_PACKAGES})`,
    );
  }
  const version = bootable[0];
  return { version, vmlinuz: `/boot/vmlinuz-${version}`, modulesDir: join(MODULES_ROOT, version) };
}

/**
 * The initramfs that loads the virtio-9p modules, mounts the host's root and switches to the guest
 * init named by LAB_INIT. Built once per kernel and content, then reused from the cache directory.
 */
export function ensureInitramfs(kernel: LabKernel, cacheDir = defaultCacheDir()): string {
  if (!existsSync(BUSYBOX)) {
    throw new Error(`failed to build the lab initramfs: ${BUSYBOX} is missing (apt-get install -y busybox-static)`);
  }
  const modules = moduleLoadOrder(kernel.modulesDir, ROOT_MODULES);
  const init = initScript(modules.map(baseName));
  const key = createHash("sha256").update(init).update(readFileSync(BUSYBOX)).digest("hex").slice(0, 12);
  const path = join(cacheDir, `initramfs-${kernel.version}-${key}.cpio.gz`);
  if (existsSync(path)) return path;

  const entries: ArchiveEntry[] = [
    ...["bin", "mod", "proc", "dev", "newroot"].map((dir): ArchiveEntry => ({ kind: "dir", path: dir })),
    { kind: "file", path: "bin/busybox", data: readFileSync(BUSYBOX), mode: 0o755 },
    ...BUSYBOX_APPLETS.map((applet): ArchiveEntry => ({ kind: "symlink", path: `bin/${applet}`, target: "busybox" })),
    ...modules.map((module): ArchiveEntry => ({
      kind: "file",
      path: `mod/${baseName(module)}`,
      data: readFileSync(join(kernel.modulesDir, module)),
      mode: 0o644,
    })),
    { kind: "file", path: "init", data: Buffer.from(init), mode: 0o755 },
  ];
  mkdirSync(cacheDir, { recursive: true });
  // Written aside and renamed so that a concurrent lab never boots a half-written file.
  const partial = `${path}.${process.pid}.partial`;
  writeFileSync(partial, gzipSync(newcArchive(entries), { level: 1 }));
  renameSync(partial, path);
  return path;
}

function defaultCacheDir(): string {
  const base = process.env.XDG_CACHE_HOME ?? (process.env.HOME ? join(homedir(), ".cache") : tmpdir());
  return join(base, "trellis", "lab");
}

/** Module paths (relative to the modules dir) in an order insmod accepts: dependencies first. */
export function moduleLoadOrder(modulesDir: string, wanted: string[]): string[] {
  const deps = parseModulesDep(readFileSync(join(modulesDir, "modules.dep"), "utf8"));
  const builtin = new Set(
    readFileSync(join(modulesDir, "modules.builtin"), "utf8").split("\n").filter(Boolean).map(moduleName),
  );
  const byName = new Map([...deps.keys()].map((path) => [moduleName(path), path]));
  const order: string[] = [];
  const visit = (path: string): void => {
    if (order.includes(path)) return;
    for (const dep of deps.get(path) ?? []) visit(dep);
    order.push(path);
  };
  for (const name of wanted) {
    const path = byName.get(name);
    if (path) visit(path);
    else if (!builtin.has(name)) {
      throw new Error(`failed to build the lab initramfs: kernel module ${name} is neither in modules.dep nor built-in`);
    }
  }
  return order;
}

function parseModulesDep(text: string): Map<string, string[]> {
  const deps = new Map<string, string[]>();
  for (const line of text.split("\n")) {
    const [path, rest] = line.split(":");
    if (path && rest !== undefined) deps.set(path, rest.trim().split(/\s+/).filter(Boolean));
  }
  return deps;
}

/** "kernel/fs/9p/9p.ko" -> "9p"; module names treat "-" and "_" alike. */
function moduleName(path: string): string {
  return baseName(path).replace(/\.ko(\..*)?$/, "").replaceAll("-", "_");
}

function baseName(path: string): string {
  return path.slice(path.lastIndexOf("/") + 1);
}

function initScript(moduleFiles: string[]): string {
  return [
    "#!/bin/sh",
    "mount -t proc proc /proc",
    "mount -t devtmpfs dev /dev",
    ...moduleFiles.map((file) => `insmod /mod/${file} || echo "lab initramfs: failed to load ${file}"`),
    "mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /newroot" +
      ' || echo "lab initramfs: failed to mount the host root over 9p"',
    "umount /proc /dev",
    'exec switch_root /newroot "$LAB_INIT"',
    "",
  ].join("\n");
}
