import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import type { LabKernel } from "./kernel.js";
import { LAB_PACKAGES } from "./kernel.js";

const QEMU = "qemu-system-x86_64";
const BOOT_LOG_LINES = 30;
/** A minimal firmware that jumps straight to the kernel: about 3 s sooner than SeaBIOS under emulation. */
const QBOOT = "/usr/share/qemu/qboot.rom";

export interface VmOptions {
  kernel: LabKernel;
  initramfs: string;
  /** Host directory shared as the guest's root filesystem. */
  rootDir: string;
  /** KEY=value words of the kernel command line; the kernel hands them to init as environment. */
  initEnv: Record<string, string>;
  /** Prefix of the guest's "<marker> start" and "<marker> exit N" console lines. */
  marker: string;
  memoryMb: number;
  cpus: number;
  timeoutMs: number;
  /** Each console line the guest prints between its start and exit markers. */
  onLine: (line: string) => void;
  /** The guest's progress notes and its errors (its own, not the script's). */
  onNote: (line: string) => void;
  onError: (line: string) => void;
  /** Called once when the guest's start marker arrives, with the guest's uptime then (seconds). */
  onBooted?: (guestUptime: number) => void;
}

/**
 * Boots the kernel under QEMU (software emulation: nested KVM is not dependable on CI), relays the
 * guest's console and resolves with the exit status the guest reports on its last marker line.
 */
export async function runVm(options: VmOptions): Promise<number> {
  const child = spawn(QEMU, qemuArgs(options), { stdio: ["ignore", "pipe", "pipe"] });
  const relay = new ConsoleRelay(options);
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => relay.push(chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, options.timeoutMs);
  // Interrupted (Ctrl-C, a CI timeout): take the VM down too, so that the caller's cleanup runs and no
  // emulated kernel is left spinning.
  const interrupted = (signal: NodeJS.Signals) => {
    child.kill("SIGKILL");
    process.exitCode = 128 + (signal === "SIGINT" ? 2 : 15);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);
  const qemuStatus = await new Promise<number | string>((resolve, reject) => {
    child.on("error", (error: NodeJS.ErrnoException) =>
      reject(
        new Error(
          error.code === "ENOENT"
            ? `failed to start ${QEMU}: not installed (apt-get install -y ${LAB_PACKAGES})`
            : `failed to start ${QEMU}: ${error.message}`,
        ),
      ),
    );
    child.on("close", (code, signal) => resolve(code ?? signal ?? "unknown"));
  }).finally(() => {
    clearTimeout(timer);
    process.off("SIGINT", interrupted);
    process.off("SIGTERM", interrupted);
  });
  relay.flush();

  if (timedOut) throw new Error(`failed to finish the lab: timed out after ${options.timeoutMs / 1000} s`);
  if (relay.exitStatus !== null) return relay.exitStatus;
  const where = relay.started ? "the guest stopped without reporting its exit status" : "the kernel did not boot";
  throw new Error(
    `failed to run the lab: ${where} (qemu exit ${qemuStatus})\n` +
      [...relay.bootLines.map((line) => `console: ${line}`), ...stderr.trim().split("\n").filter(Boolean)].join("\n"),
  );
}

function qemuArgs(options: VmOptions): string[] {
  const append = [
    "console=ttyS0",
    "quiet",
    "loglevel=1",
    "panic=-1",
    ...Object.entries(options.initEnv).map(([key, value]) => `${key}=${kernelWord(value)}`),
  ].join(" ");
  return [
    ...["-accel", "tcg,thread=multi", "-m", String(options.memoryMb), "-smp", String(options.cpus)],
    ...["-nographic", "-no-reboot", "-nic", "none"],
    ...(existsSync(QBOOT) ? ["-bios", QBOOT] : []),
    ...["-kernel", options.kernel.vmlinuz, "-initrd", options.initramfs, "-append", append],
    ...["-fsdev", `local,id=hostroot,path=${options.rootDir},security_model=passthrough,multidevs=remap`],
    ...["-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot"],
  ];
}

/** The kernel splits its command line at blanks; a value with one would reach init cut in two. */
function kernelWord(value: string): string {
  if (/[\s"]/.test(value)) throw new Error(`failed to boot the lab: ${JSON.stringify(value)} contains a blank or a quote`);
  return value;
}

/**
 * Splits the serial console into lines (they end in \r\n) and passes on only what the guest prints
 * between its start marker and its exit marker: before it come firmware escape sequences and kernel
 * noise, which are kept only to explain a failed boot.
 */
class ConsoleRelay {
  started = false;
  exitStatus: number | null = null;
  readonly bootLines: string[] = [];
  private partial = "";

  constructor(private readonly options: VmOptions) {}

  push(text: string): void {
    const lines = (this.partial + text).split("\n");
    this.partial = lines.pop() ?? "";
    for (const line of lines) this.line(line.replaceAll("\r", ""));
  }

  flush(): void {
    if (this.partial) this.line(this.partial.replaceAll("\r", ""));
    this.partial = "";
  }

  private line(line: string): void {
    if (this.exitStatus !== null) return;
    // A marker can follow output that did not end its line (a script's last words without "\n").
    const at = line.indexOf(`${this.options.marker} `);
    if (!this.started) return this.bootLine(line, at);
    if (at < 0) return this.options.onLine(line);
    if (at > 0) this.options.onLine(line.slice(0, at));
    this.tagged(line.slice(at + this.options.marker.length + 1));
  }

  private bootLine(line: string, at: number): void {
    if (at >= 0 && line.startsWith("start ", at + this.options.marker.length + 1)) {
      this.started = true;
      this.options.onBooted?.(Number(line.slice(at + this.options.marker.length + 7)));
      return;
    }
    this.bootLines.push(printable(line));
    this.bootLines.splice(0, this.bootLines.length - BOOT_LOG_LINES);
  }

  /** "exit N", or a line of the guest's own notes or errors, which go apart from the script's output. */
  private tagged(text: string): void {
    const space = text.indexOf(" ");
    const [kind, rest] = [text.slice(0, space), text.slice(space + 1)];
    if (kind === "exit") this.exitStatus = Number.parseInt(rest, 10);
    else if (kind === "note") this.options.onNote(rest);
    else this.options.onError(rest);
  }
}

function printable(line: string): string {
  return line.replace(/\x1b(\[[0-9;?]*[A-Za-z]|c)?|[\x00-\x08\x0b-\x1f]/g, "");
}
