import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { initAuthority, issueCertificate } from "../../libs/tls/authority.js";
import { defaultServices, labCertificates, labHosts, natsTlsConfig, type GuestConfig, type LabHost, type ServiceSpec } from "./config.js";
import { ensureInitramfs, findKernel } from "./kernel.js";
import { labRouters } from "./routers.js";
import { runVm } from "./vm.js";

export interface LabRunOptions {
  /** Absolute path of the sh script to run inside the lab. */
  script: string;
  hosts: number;
  upstreams: number;
  /** BIRD routers r1…rN peering with every host, and a client behind r1 (none when absent). */
  routers?: number;
  /** Host directory the guest sees as $TRELLIS_LAB_OUT (created if missing). */
  outDir?: string;
  verbose: boolean;
  timeoutSeconds: number;
  /** Every connection with mutual TLS, and every service with its own certificate (`lab run --tls`). */
  tls?: boolean;
  /** The services to start; the real Trellis services when absent. */
  services?: ServiceSpec[];
  /** Each line of the script's output (and of the service logs shown after it). */
  onOutput?: (line: string) => void;
  /** The lab's own progress notes (with verbose); stderr by default. */
  onNote?: (line: string) => void;
  /** What went wrong in the lab itself (not in the script); stderr by default. */
  onError?: (line: string) => void;
}

const MEMORY_MB = 2048;
const CPUS = 2;

/** Boots a lab, runs the script in it and resolves with the script's exit status. */
export async function runLab(options: LabRunOptions): Promise<number> {
  const repo = repoRoot();
  const paths = {
    guestInit: join(repo, "services/lab/guest-init.sh"),
    guest: join(repo, "dist/services/lab/guest.js"),
    cliMain: join(repo, "dist/bundle/trellis.js"),
  };
  visibleInGuest(repo, "the repository");
  if (!existsSync(paths.guest)) throw new Error(`failed to start the lab: ${paths.guest} is missing (run npm run build)`);
  const script = visibleInGuest(options.script, "the lab script");
  const onOutput = options.onOutput ?? ((line: string) => process.stdout.write(`${line}\n`));
  const toStderr = (line: string): boolean => process.stderr.write(`${line}\n`);
  const note = (message: string): void => {
    if (options.verbose) (options.onNote ?? toStderr)(`lab: ${message}`);
  };
  const onError = (message: string): void => (options.onError ?? toStderr)(`lab: ${message}`);

  const startedAt = Date.now();
  const kernel = findKernel();
  const initramfs = ensureInitramfs(kernel);
  const hosts = labHosts(options.hosts, options.upstreams);
  const routers = labRouters(options.routers ?? 0);
  const config: GuestConfig = {
    hosts,
    routers,
    services: options.services ?? defaultServices(hosts, [process.execPath, paths.cliMain], options.tls, routers),
    script,
    cwd: repo,
    verbose: options.verbose,
    hasOut: options.outDir !== undefined,
    node: process.execPath,
    cliMain: paths.cliMain,
    tls: options.tls ?? false,
  };
  const runDir = mkdtempSync(join(tmpdir(), "trellis-lab-"));
  try {
    // Made here, where openssl runs natively: in the emulated guest each key would take seconds.
    if (config.tls) makeCertificates(join(runDir, "tls"), hosts);
    writeFileSync(join(runDir, "config.json"), JSON.stringify(config, null, 2));
    if (options.outDir !== undefined) linkOutDir(options.outDir, runDir);
    const marker = `trellis-lab-${randomBytes(6).toString("hex")}`;
    note(`kernel ${kernel.version}, initramfs ${initramfs}`);
    return await runVm({
      kernel,
      initramfs,
      rootDir: "/",
      initEnv: {
        LAB_INIT: paths.guestInit,
        LAB_RUN: runDir,
        LAB_NODE: process.execPath,
        LAB_GUEST: paths.guest,
        LAB_MARK: marker,
      },
      marker,
      memoryMb: MEMORY_MB,
      cpus: CPUS,
      timeoutMs: options.timeoutSeconds * 1000,
      onLine: onOutput,
      onNote: note,
      onError,
      onBooted: (uptime) =>
        note(`booted to init in ${((Date.now() - startedAt) / 1000).toFixed(1)} s (guest uptime ${uptime} s)`),
    });
  } finally {
    rmSync(runDir, { recursive: true, force: true });
    note(`finished in ${((Date.now() - startedAt) / 1000).toFixed(1)} s`);
  }
}

/** Longer than the 30 days within which every process warns of its certificate's end, at each start. */
const LAB_CERTIFICATE_DAYS = 90;

/** The lab's CA and a certificate for every service and host, and the operator the script acts as. */
function makeCertificates(dir: string, hosts: LabHost[]): void {
  initAuthority(dir, LAB_CERTIFICATE_DAYS);
  for (const { name, role, sans } of labCertificates(hosts)) {
    issueCertificate(dir, { identity: { role, name }, sans, days: LAB_CERTIFICATE_DAYS, replace: false });
  }
  writeFileSync(join(dir, "nats.conf"), natsTlsConfig());
}

/** The folder holding package.json above this module, from src (services/lab) or from dist/services/lab. */
function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error("failed to find the Trellis repository above the lab runner");
    dir = parent;
  }
  return dir;
}

/** The guest mounts its own /tmp and /run over the host's, so a file there would not be found. */
function visibleInGuest(path: string, what: string): string {
  const absolute = resolve(path);
  if (!existsSync(absolute)) throw new Error(`failed to find ${what} ${absolute}`);
  const real = realpathSync(absolute);
  if (/^\/(tmp|run)(\/|$)/.test(real)) {
    throw new Error(`failed to use ${what} ${real}: the lab hides the host's /tmp and /run, put it elsewhere`);
  }
  return real;
}

/**
 * The guest binds run/out (this link) over its $TRELLIS_LAB_OUT before hiding the host's /tmp; its /run
 * is hidden before, though.
 */
function linkOutDir(outDir: string, runDir: string): void {
  const absolute = resolve(outDir);
  mkdirSync(absolute, { recursive: true });
  const real = realpathSync(absolute);
  if (/^\/run(\/|$)/.test(real)) throw new Error(`failed to use --out ${real}: the lab hides the host's /run`);
  symlinkSync(real, join(runDir, "out"));
}
