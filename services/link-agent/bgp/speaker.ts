import { spawn } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { birdCommand } from "./bird-control.js";
import { birdConfig } from "./bird-config.js";
import type { BgpOptions } from "./options.js";

/** Where each host's BIRD keeps its config, control socket and pid: per host, as the lab's hosts share one /run. */
export const BIRD_RUN_DIR = "/run/trellis/bird";

export interface BirdFiles {
  config: string;
  socket: string;
  pidFile: string;
  log: string;
}

export function birdFiles(host: string, runDir = BIRD_RUN_DIR): BirdFiles {
  const dir = join(runDir, host);
  return { config: join(dir, "bird.conf"), socket: join(dir, "bird.ctl"), pidFile: join(dir, "bird.pid"), log: join(dir, "bird.log") };
}

export interface SpeakerOptions {
  host: string;
  bgp: BgpOptions;
  addresses: string[];
  /** BIRD_RUN_DIR unless a test points elsewhere. */
  runDir?: string;
  /** The BIRD binary; "bird" on PATH (Debian's bird2 puts it in /usr/sbin). */
  birdBinary?: string;
}

/**
 * The host's BGP speaker: a BIRD of its own that the agent starts and reloads but never stops, so that
 * an agent restart leaves the sessions and their routes alone. Each pass renders the whole config from
 * what the host serves; BIRD is started when it does not run, and told to reload only when the config
 * differs from the one it runs, which is the file on disk (so a restarted agent that serves the same
 * prefixes writes and reloads nothing).
 */
export class BirdSpeaker {
  readonly files: BirdFiles;

  constructor(private readonly options: SpeakerOptions) {
    this.files = birdFiles(options.host, options.runDir);
  }

  /** Makes BIRD advertise exactly `prefixes` (and withdraw everything else it advertised). */
  async advertise(prefixes: string[]): Promise<void> {
    const { host, bgp, addresses } = this.options;
    const wanted = birdConfig({ host, bgp, addresses, prefixes, logFile: this.files.log });
    const pid = this.runningPid();
    if (pid === undefined) {
      this.writeConfig(wanted);
      await this.startBird();
      return;
    }
    const running = existsSync(this.files.config) ? readFileSync(this.files.config, "utf8") : undefined;
    if (running === wanted) return;
    this.writeConfig(wanted);
    try {
      await birdCommand(this.files.socket, "configure");
    } catch (error) {
      // BIRD keeps the config it had: so does the file, and the next pass tries again.
      if (running !== undefined) this.writeConfig(running);
      throw new Error(`failed to reload BIRD (pid ${pid}) with ${prefixes.length} prefixes of host ${this.options.host}: ${(error as Error).message}`);
    }
  }

  runningPid(): number | undefined {
    return runningBirdPid(this.files);
  }

  private writeConfig(text: string): void {
    mkdirSync(join(this.files.config, ".."), { recursive: true });
    // Renamed into place: BIRD, reloading, never reads half a file.
    writeFileSync(`${this.files.config}.new`, text);
    renameSync(`${this.files.config}.new`, this.files.config);
  }

  /**
   * BIRD daemonizes (a session of its own, so that no signal to the agent's process group reaches it) once
   * its config parsed; its exit status says whether it did.
   */
  private async startBird(): Promise<void> {
    const binary = this.options.birdBinary ?? "bird";
    const child = spawn(binary, ["-c", this.files.config, "-s", this.files.socket, "-P", this.files.pidFile], {
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    let stderr = "";
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const status = await new Promise<number | string>((resolve) => {
      child.on("error", (error) => resolve(error.message));
      child.on("close", (code, signal) => resolve(code ?? `signal ${signal}`));
    });
    if (status !== 0) {
      const why = typeof status === "string" && status.includes("ENOENT") ? `${binary} is not installed (apt-get install bird2)` : stderr.trim() || `exit status ${status}`;
      throw new Error(`failed to start BIRD for host ${this.options.host} (config ${this.files.config}): ${why}`);
    }
  }
}

/**
 * The pid of the BIRD an agent started for its host, if it runs: the pid file's process, only if it is a
 * bird reading that host's config (a pid reused by another program, or someone else's BIRD, is not ours).
 */
export function runningBirdPid(files: BirdFiles): number | undefined {
  if (!existsSync(files.pidFile)) return undefined;
  const pid = Number(readFileSync(files.pidFile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return argv.includes(files.config) && /(^|\/)bird$/.test(argv[0]) ? pid : undefined;
  } catch {
    return undefined; // no such process
  }
}

/**
 * For an agent started without BGP: a BIRD that an earlier agent of the host ran with BGP is shut down,
 * which ends its sessions cleanly, so that the peers withdraw what it advertised at once.
 */
export async function stopLeftoverSpeaker(host: string, runDir = BIRD_RUN_DIR): Promise<void> {
  const files = birdFiles(host, runDir);
  const pid = runningBirdPid(files);
  if (pid === undefined) return;
  try {
    await birdCommand(files.socket, "down");
  } catch (error) {
    throw new Error(`failed to stop the BIRD (pid ${pid}) that an earlier agent of host ${host} ran with BGP: ${(error as Error).message}`);
  }
}
