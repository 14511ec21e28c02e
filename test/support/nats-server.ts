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
  /** SIGSTOP: the server hangs with its connections open, as a stalled host or network would. */
  freeze(): void;
  /** SIGCONT after freeze(). */
  thaw(): void;
}

export interface NatsServerOptions {
  /**
   * A configuration file to run as it is, users and permissions included. Only its listen address (by
   * flags) and its JetStream store directory (by a wrapper file that includes it) are replaced.
   */
  configFile?: string;
  /** Added to the server's environment: the variables the configuration file reads. */
  environment?: Record<string, string>;
  /** The port to listen on, e.g. one a service was told of before the server started; a free one by default. */
  port?: number;
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
  const port = options.port ?? (await freePort());
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
    freeze() {
      child.kill("SIGSTOP");
    },
    thaw() {
      child.kill("SIGCONT");
    },
  };
}

/** One node of a NatsCluster. */
export interface NatsClusterNode {
  /** Its server_name, as its configuration file sets it. */
  readonly name: string;
  readonly url: string;
  isRunning(): boolean;
  /** SIGKILL, as a crash would; the node keeps its ports and store for start(). */
  kill(): Promise<void>;
  /** Starts it again after kill(), on the same ports and store. */
  start(): Promise<void>;
}

/** Real nats-servers with JetStream forming one cluster on loopback, each with its own store directory. */
export interface NatsCluster {
  nodes: NatsClusterNode[];
  /** Every node's client URL, separated by commas, as TRELLIS_NATS_URL and --nats take them. */
  urls: string;
  /** The server_name of the JetStream meta leader, once every running node names the same running node. */
  metaLeader(timeoutMs: number): Promise<string>;
  stop(): Promise<void>;
}

export interface NatsClusterOptions {
  /**
   * One configuration file per node, run as it is: only where it listens for clients and routes, the routes it
   * solicits (by flags) and its JetStream store directory (by a wrapper file that includes it) are replaced.
   */
  configFiles: string[];
  /** Added to every server's environment: the variables the configuration files read. */
  environment?: Record<string, string>;
  /**
   * The user and password of the files' cluster authorization. nats-server's --cluster flag replaces that
   * authorization with the user in its URL (none when it names none), so the flag names the same one; and 2.9.10
   * sends a route's credentials only from the route's URL.
   */
  route: { user: string; password: string };
}

export async function startNatsCluster(options: NatsClusterOptions): Promise<NatsCluster> {
  const listeners = await Promise.all(options.configFiles.map(async () => ({ client: await freePort(), route: await freePort() })));
  const credentials = `${options.route.user}:${options.route.password}`;
  const routes = listeners.map(({ route }) => `nats-route://${credentials}@127.0.0.1:${route}`).join(",");
  const env = { ...process.env, ...options.environment };
  const nodes: ClusterNode[] = [];
  try {
    for (const [index, configFile] of options.configFiles.entries()) {
      const { client, route } = listeners[index];
      const node = new ClusterNode(client, configFile, ["--cluster", `nats://${credentials}@127.0.0.1:${route}`, "--routes", routes], env);
      nodes.push(node);
      await node.start();
    }
  } catch (error) {
    await Promise.all(nodes.map((node) => node.stop()));
    throw error;
  }
  return {
    nodes,
    urls: nodes.map((node) => node.url).join(","),
    metaLeader: (timeoutMs) => agreedMetaLeader(nodes, timeoutMs),
    async stop() {
      await Promise.all(nodes.map((node) => node.stop()));
    },
  };
}

class ClusterNode implements NatsClusterNode {
  name = "";
  readonly url: string;
  /** The meta leader this node last logged, since it last started. */
  metaLeader: string | undefined;
  private child: ChildProcess | undefined;
  private readonly storeDir = mkdtempSync(join(tmpdir(), "trellis-nats-"));
  private readonly args: string[];

  constructor(
    private readonly port: number,
    configFile: string,
    listenArgs: string[],
    private readonly env: NodeJS.ProcessEnv,
  ) {
    this.url = `nats://127.0.0.1:${port}`;
    this.args = [...listenArgs, "-c", wrapConfig(configFile, this.storeDir)];
  }

  isRunning(): boolean {
    return this.child !== undefined;
  }

  async start(): Promise<void> {
    this.metaLeader = undefined;
    this.child = await launch(this.port, this.args, this.env, (line) => this.read(line));
  }

  async kill(): Promise<void> {
    if (this.child) await kill(this.child, "SIGKILL");
    this.child = undefined;
  }

  async stop(): Promise<void> {
    if (this.child) await kill(this.child, "SIGTERM");
    this.child = undefined;
    rmSync(this.storeDir, { recursive: true, force: true });
  }

  /** nats-server 2.9.10 logs its name at start, and every change of meta leader as each node learns of it. */
  private read(line: string): void {
    const name = /\]\s+Name:\s+(\S+)/.exec(line);
    if (name && !this.name) this.name = name[1];
    const other = /JetStream cluster new metadata leader: ([^/\s]+)\//.exec(line);
    if (other) this.metaLeader = other[1];
    if (line.includes("Self is new JetStream cluster metadata leader")) this.metaLeader = this.name;
  }
}

async function agreedMetaLeader(nodes: ClusterNode[], timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const running = nodes.filter((node) => node.isRunning());
    const named = new Set(running.map((node) => node.metaLeader));
    const [leader] = named;
    if (named.size === 1 && running.some((node) => node.name === leader)) return leader!;
    if (Date.now() > deadline) throw new Error(`no JetStream meta leader after ${timeoutMs} ms: the nodes name ${[...named].join(", ")}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
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

/** Resolves once the server is ready; `onLine` sees each line it logs, then and afterwards. */
async function launch(port: number, args: string[], env: NodeJS.ProcessEnv, onLine: (line: string) => void = () => undefined): Promise<ChildProcess> {
  const child = spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), ...args], { env, stdio: ["ignore", "ignore", "pipe"] });
  await new Promise<void>((resolve, reject) => {
    let log = "";
    let partial = "";
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
      const lines = (partial + chunk.toString()).split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) {
        onLine(line);
        log += `${line}\n`;
        if (line.includes("Server is ready")) {
          clearTimeout(timer);
          resolve();
        }
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
