/**
 * Runs inside the lab guest as a child of guest-init.sh: builds the underlay and the hosts, starts the
 * services, runs the user's script, tears everything down. Exits with the script's status, or
 * LAB_FAILURE when the lab itself could not be set up.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { readAgentRecord, writeAgentRecord } from "./agents.js";
import {
  AGENTS_DIR,
  BIN_DIR,
  CONTROL_ADDRESS,
  CONTROL_ADDRESS6,
  certificateEnv,
  LAB_FAILURE,
  LAB_OPERATOR,
  LOG_DIR,
  NATS_URL,
  OUT_DIR,
  PLANNER_ADDR,
  TLS_DIR,
  UNDERLAY_PREFIX,
  UNDERLAY_PREFIX6,
  type GuestConfig,
  type LabHost,
  type ServiceSpec,
} from "./config.js";
import { exitStatus, logTail, spawnLogged, stopProcess, waitForReady } from "./process.js";
import { CLIENT, ROUTER_BIRD_DIR, routerBirdConfig, routerFiles, type LabRouter } from "./routers.js";

const BUSYBOX = "/bin/busybox";
const KERNEL_MODULES = ["ipvlan", "8021q", "dummy", "veth", "bridge"];
const LOG_TAIL_LINES = 40;

interface RunningService {
  spec: ServiceSpec;
  child: ChildProcess;
  log: string;
}

const startedAt = Date.now();

/** Lines the host tells apart from the script's output by the marker guest-init.sh was given. */
function tell(kind: "note" | "error", message: string): void {
  for (const line of message.split("\n")) console.log(`${process.env.LAB_MARK} ${kind} ${line}`);
}

async function main(configPath: string): Promise<number> {
  const config = JSON.parse(readFileSync(configPath, "utf8")) as GuestConfig;
  const note = (message: string): void => {
    if (config.verbose) tell("note", `${message} (${((Date.now() - startedAt) / 1000).toFixed(1)} s)`);
  };
  const services: RunningService[] = [];
  try {
    if (config.hasOut && !isMountPoint(OUT_DIR)) throw new Error(`failed to share the --out folder as ${OUT_DIR}`);
    await run("load the kernel modules", "modprobe", ["-a", ...KERNEL_MODULES]);
    await run("create the underlay", "ip", ["-batch", "-"], underlayBatch(config.hosts, config.routers));
    await run("configure the hosts", BUSYBOX, ["sh", "-ec", hostsScript(config.hosts)]);
    note(`underlay and ${config.hosts.length} hosts ready`);
    if (config.routers.length > 0) {
      await run("configure the routers and the client", BUSYBOX, ["sh", "-ec", routersScript(config.routers, config.hosts)]);
      await startRouterSpeakers(config.routers, config.hosts);
      note(`${config.routers.length} routers and the client ready`);
    }
    const env = serviceEnv(config);
    writeTrellisWrapper(config);
    await startServices(config.services, env, services, note);
    const status = await runScript(config, env);
    note(`script exited with status ${status}`);
    if (config.verbose || status !== 0) printLogs(services);
    return status;
  } catch (error) {
    tell("error", (error as Error).message);
    return LAB_FAILURE;
  } finally {
    await teardown(services);
    note("torn down");
  }
}

function isMountPoint(path: string): boolean {
  return readFileSync("/proc/self/mounts", "utf8")
    .split("\n")
    .some((line) => line.split(" ")[1] === path);
}

async function run(what: string, command: string, args: string[], input = ""): Promise<void> {
  const child = spawn(command, args, { stdio: ["pipe", "ignore", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  child.stdin.end(input);
  const status = await new Promise<number>((resolve, reject) => {
    child.on("error", (error) => reject(new Error(`failed to ${what}: ${error.message}`)));
    child.on("close", (code, signal) => resolve(exitStatus(code, signal)));
  });
  if (status !== 0) throw new Error(`failed to ${what}: ${stderr.trim() || `${command} exited with status ${status}`}`);
}

/**
 * The bridge every host's eth0 hangs on (its address is where the control plane listens), the host
 * namespaces and their veths (the routers' too, and the client's segment behind r1): one `ip -batch`, as
 * each start of the dynamically linked `ip` costs ~0.4 s.
 */
function underlayBatch(hosts: LabHost[], routers: LabRouter[]): string {
  return [
    "link set lo up",
    "link add br0 type bridge",
    `addr add ${CONTROL_ADDRESS}/${UNDERLAY_PREFIX} dev br0`,
    `addr add ${CONTROL_ADDRESS6}/${UNDERLAY_PREFIX6} dev br0 nodad`,
    "link set br0 up",
    ...[...hosts, ...routers].flatMap((host) => [
      `netns add ${host.name}`,
      `link add veth-${host.name} type veth peer name eth0 netns ${host.name}`,
      `link set veth-${host.name} master br0 up`,
    ]),
    ...(routers.length > 0 ? [`netns add ${CLIENT.name}`, `link add eth1 netns ${routers[0].name} type veth peer name eth0 netns ${CLIENT.name}`] : []),
    "",
  ].join("\n");
}

/**
 * Inside each host: eth0 addressed (IPv6 without duplicate address detection, which would hold the
 * address back for seconds) and up, lo up, forwarding on as on a router; static busybox only.
 */
function hostsScript(hosts: LabHost[]): string {
  return hosts
    .map((host) => {
      const inside = [
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad",
        `${BUSYBOX} ip addr add ${host.address}/${UNDERLAY_PREFIX} dev eth0`,
        `${BUSYBOX} ip addr add ${host.address6}/${UNDERLAY_PREFIX6} dev eth0`,
        `${BUSYBOX} ip link set eth0 up`,
        `${BUSYBOX} ip link set lo up`,
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
      ].join(" && ");
      return `${BUSYBOX} nsenter --net=/run/netns/${host.name} ${BUSYBOX} sh -ec '${inside}'`;
    })
    .join("\n");
}

/**
 * Routers: eth0 on the underlay, forwarding on; r1 also has eth1 on the client's segment. The client's
 * default routes go via r1, and every host routes the client's segment via r1 (as a host's default route
 * to its top-of-rack router would), so that replies find their way back.
 */
function routersScript(routers: LabRouter[], hosts: LabHost[]): string {
  const inNamespace = (name: string, commands: string[]) => `${BUSYBOX} nsenter --net=/run/netns/${name} ${BUSYBOX} sh -ec '${commands.join(" && ")}'`;
  const [r1] = routers;
  return [
    ...routers.map((router) =>
      inNamespace(router.name, [
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad",
        `${BUSYBOX} ip addr add ${router.address}/${UNDERLAY_PREFIX} dev eth0`,
        `${BUSYBOX} ip addr add ${router.address6}/${UNDERLAY_PREFIX6} dev eth0`,
        `${BUSYBOX} ip link set eth0 up`,
        `${BUSYBOX} ip link set lo up`,
        "echo 1 > /proc/sys/net/ipv4/ip_forward",
        "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding",
        ...(router === r1
          ? [
              "echo 0 > /proc/sys/net/ipv6/conf/eth1/accept_dad",
              `${BUSYBOX} ip addr add ${CLIENT.gateway}/24 dev eth1`,
              `${BUSYBOX} ip addr add ${CLIENT.gateway6}/64 dev eth1`,
              `${BUSYBOX} ip link set eth1 up`,
            ]
          : []),
      ]),
    ),
    inNamespace(CLIENT.name, [
      "echo 0 > /proc/sys/net/ipv6/conf/eth0/accept_dad",
      `${BUSYBOX} ip addr add ${CLIENT.address}/24 dev eth0`,
      `${BUSYBOX} ip addr add ${CLIENT.address6}/64 dev eth0`,
      `${BUSYBOX} ip link set eth0 up`,
      `${BUSYBOX} ip link set lo up`,
      `${BUSYBOX} ip route add default via ${CLIENT.gateway}`,
      `${BUSYBOX} ip -6 route add default via ${CLIENT.gateway6}`,
    ]),
    ...hosts.map((host) =>
      inNamespace(host.name, [`${BUSYBOX} ip route add ${CLIENT.prefix} via ${r1.address}`, `${BUSYBOX} ip -6 route add ${CLIENT.prefix6} via ${r1.address6}`]),
    ),
  ].join("\n");
}

/** Each router's BIRD, which daemonizes once its config parsed; `birdc -s ${ROUTER_BIRD_DIR}/rN.ctl` asks it. */
async function startRouterSpeakers(routers: LabRouter[], hosts: LabHost[]): Promise<void> {
  mkdirSync(ROUTER_BIRD_DIR, { recursive: true });
  for (const router of routers) {
    const files = routerFiles(router);
    writeFileSync(files.config, routerBirdConfig(router, hosts));
    await run(`start the BIRD of router ${router.name}`, BUSYBOX, [
      "nsenter",
      `--net=/run/netns/${router.name}`,
      "bird",
      "-c",
      files.config,
      "-s",
      files.socket,
      "-P",
      files.pidFile,
    ]);
  }
}

function serviceEnv(config: GuestConfig): Record<string, string> {
  return {
    PATH: `${BIN_DIR}:${dirname(config.node)}:${process.env.PATH ?? "/usr/sbin:/usr/bin:/sbin:/bin"}`,
    HOME: "/tmp/lab/home",
    TRELLIS_LAB: "1",
    TRELLIS_NATS_URL: NATS_URL,
    TRELLIS_PLANNER_ADDR: PLANNER_ADDR,
    // With --tls, everyone trusts the lab's CA; the script's `trellis` is an operator, each service itself (spec.env).
    ...(config.tls ? { TRELLIS_TLS_CA: `${TLS_DIR}/ca.crt`, TRELLIS_NATS_TLS_CA: `${TLS_DIR}/ca.crt`, ...certificateEnv(LAB_OPERATOR) } : {}),
    ...(config.hasOut ? { TRELLIS_LAB_OUT: OUT_DIR, TRELLIS_TRACE_FILE: `${OUT_DIR}/trace.jsonl` } : {}),
  };
}

/** `trellis` on the script's PATH runs the CLI of the repo the lab was started from. */
function writeTrellisWrapper(config: GuestConfig): void {
  mkdirSync(BIN_DIR, { recursive: true });
  const path = join(BIN_DIR, "trellis");
  writeFileSync(path, `#!/bin/sh\nexec ${shellQuote(config.node)} ${shellQuote(config.cliMain)} "$@"\n`);
  chmodSync(path, 0o755);
}

function shellQuote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

async function startServices(
  specs: ServiceSpec[],
  env: Record<string, string>,
  running: RunningService[],
  note: (message: string) => void,
): Promise<void> {
  mkdirSync(LOG_DIR, { recursive: true });
  mkdirSync(AGENTS_DIR, { recursive: true });
  mkdirSync(env.HOME, { recursive: true });
  const stages = [...new Set(specs.map((spec) => spec.stage))].sort((a, b) => a - b);
  for (const stage of stages) {
    const started = specs.filter((spec) => spec.stage === stage).map((spec) => startService(spec, env));
    running.push(...started);
    await Promise.all(started.map(({ spec, child, log }) => waitForReady(`service ${spec.name}`, child, log, 0)));
    note(`ready: ${started.map(({ spec }) => spec.name).join(", ")}`);
  }
}

function startService(spec: ServiceSpec, env: Record<string, string>): RunningService {
  const log = join(LOG_DIR, `${spec.name}.log`);
  const argv = spec.netns ? [BUSYBOX, "nsenter", `--net=/run/netns/${spec.netns}`, "--", ...spec.argv] : spec.argv;
  const ownEnv = { ...env, ...spec.env };
  const child = spawnLogged(argv, ownEnv, log);
  if (spec.agentHost) {
    writeAgentRecord({ host: spec.agentHost, argv, env: ownEnv, log, pid: child.pid ?? null, state: "running" });
  }
  return { spec, child, log };
}

/**
 * Runs the script with its stderr merged into stdout (in order) and relays that to the console, ending
 * an unfinished last line so that what follows (logs, the exit marker) starts on a line of its own.
 */
async function runScript(config: GuestConfig, env: Record<string, string>): Promise<number> {
  const child = spawn("sh", ["-c", 'exec sh "$0" 2>&1', config.script], {
    cwd: config.cwd,
    env,
    stdio: ["ignore", "pipe", "inherit"],
  });
  let lastByte = "\n".charCodeAt(0);
  child.stdout.on("data", (chunk: Buffer) => {
    process.stdout.write(chunk);
    lastByte = chunk[chunk.length - 1];
  });
  const status = await new Promise<number>((resolve, reject) => {
    child.on("error", (error) => reject(new Error(`failed to run ${config.script}: ${error.message}`)));
    child.on("close", (code, signal) => resolve(exitStatus(code, signal)));
  });
  if (lastByte !== "\n".charCodeAt(0)) process.stdout.write("\n");
  return status;
}

function printLogs(services: RunningService[]): void {
  for (const { log } of services) console.log(logTail(log, LOG_TAIL_LINES));
}

/** Agents first (they may have been restarted by the script: their record has the current pid), NATS last. */
async function teardown(services: RunningService[]): Promise<void> {
  const byStageDescending = [...services].sort((a, b) => b.spec.stage - a.spec.stage);
  for (const service of byStageDescending) {
    await stopService(service).catch((error: Error) =>
      tell("error", `failed to stop ${service.spec.name}: ${error.message}`),
    );
  }
  await run("delete the namespaces", "ip", ["-all", "netns", "delete"]).catch((error: Error) =>
    tell("error", error.message),
  );
}

async function stopService({ spec, child }: RunningService): Promise<void> {
  const pid = spec.agentHost ? readAgentRecord(spec.agentHost).pid : child.pid;
  if (pid) await stopProcess(pid);
}

// Exit explicitly: a service that outlived its stop must not keep the guest from powering off.
process.exit(await main(process.argv[2]));
