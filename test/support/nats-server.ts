import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";

/** A real nats-server with JetStream, on a free loopback port, with its own store directory. */
export interface NatsServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** SIGKILL and start again on the same port and store, as a crash would. */
  restart(): Promise<void>;
}

export interface NatsServerOptions {
  /**
   * A configuration file to run as it is, users and permissions included. Only its listen address (by
   * flags) and its JetStream store directory (by a wrapper file that includes it) are replaced.
   */
  configFile?: string;
  /** Added to the server's environment: the variables the configuration file reads. */
  environment?: Record<string, string>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

export async function startNatsServer(options: NatsServerOptions = {}): Promise<NatsServer> {
  const port = await freePort();
  const storeDir = mkdtempSync(join(tmpdir(), "trellis-nats-"));
  const config = options.configFile ? ["-c", wrapConfig(options.configFile, storeDir)] : ["-js", "-sd", storeDir];
  const env = { ...process.env, ...options.environment };
  let child = await launch(port, config, env);
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    async stop() {
      await kill(child, "SIGTERM");
      rmSync(storeDir, { recursive: true, force: true });
    },
    async restart() {
      await kill(child, "SIGKILL");
      child = await launch(port, config, env);
    },
  };
}

/**
 * nats-server refuses `-sd` next to a store_dir in the file, but a later `jetstream` block replaces an
 * earlier one. It joins an include's path to the including file's directory, even an absolute path, so
 * the wrapper names the file relative to where the wrapper is.
 */
function wrapConfig(configFile: string, storeDir: string): string {
  const wrapper = join(storeDir, "server.conf");
  writeFileSync(wrapper, `include "${relative(storeDir, configFile)}"\njetstream { store_dir: "${storeDir}" }\n`);
  return wrapper;
}

async function launch(port: number, config: string[], env: NodeJS.ProcessEnv): Promise<ChildProcess> {
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), ...config], { env, stdio: ["ignore", "ignore", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    let log = "";
    const timer = setTimeout(() => reject(new Error(`nats-server did not start on port ${port}: ${log}`)), 10_000);
    child.on("error", (error) => {
      clearTimeout(timer);
      reject(new Error(`failed to start nats-server (is the nats-server package installed?): ${error.message}`));
    });
    // A configuration it refuses makes it exit at once, saying why.
    child.on("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`nats-server exited (${code}) before it was ready: ${log}`));
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      log += chunk.toString();
      if (log.includes("Server is ready")) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return child;
}

async function kill(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise<void>((resolve) => {
    child.once("exit", () => resolve());
    child.kill(signal);
  });
}
