#!/usr/bin/env node
import { silenceIpServerNameWarning } from "../../libs/grpc/warnings.js";
import { startTracing, stopTracing, withSpan } from "../../libs/telemetry/tracing.js";
import { UsageError } from "./parse.js";

const USAGE = `Usage: trellis COMMAND

Client commands:
  network create|ls|inspect|rm   manage ipvlan networks
  run                            create a container (a network namespace) on a network
  exec CONTAINER CMD...          run a command inside a container
  rm CONTAINER...                remove containers
  ps                             list containers
  status [--json]                the cluster at a glance: hosts, networks and their pools, containers, planners
  (each takes --timeout=SECONDS: how long to retry while the planner restarts or fails over, default 30)

Services:
  ipam | planner | agent | up    start one service, or all of one host (up)

Certificates:
  certs init | issue NAME --role=R   the cluster's CA, and a key and certificate per service, host or person

CNI (container runtimes, Kubernetes):
  cni install [--bin-dir] [--conf-dir] [--with-node] NETWORK   the trellis and trellis-ipam plugins and a conflist for NETWORK

Docker:
  docker-plugin [--socket]       serve the trellis network and IPAM driver to this host's dockerd

NATS:
  nats replicas N                give every Trellis stream and bucket N copies (TRELLIS_NATS_REPLICAS)

Lab:
  lab run [--hosts N] SCRIPT     run SCRIPT in a kernel with ipvlan, 802.1Q and dummy
  host exec HOST CMD...          run a command in a lab host's namespace

Connection settings: TRELLIS_NATS_URL, TRELLIS_NATS_REPLICAS, TRELLIS_PLANNER_ADDR (HOST:PORT, or several replicas
separated by commas), TRELLIS_IPAM_ADDR, TRELLIS_HOST, TRELLIS_AGENT_SOCKET, TRELLIS_TLS_CA, TRELLIS_TLS_CERT, TRELLIS_TLS_KEY,
TRELLIS_NATS_TLS_CA.`;

type Command = (argv: string[]) => Promise<number>;

// Each command's module is loaded only when it runs: a client call need not load the services, and in
// the emulated lab every module read costs.

/** Client commands are traced: each is the root span of its intent's trace. */
const clientCommands: Record<string, () => Promise<Command>> = {
  network: async () => (await import("./commands/network.js")).networkCommand,
  run: async () => (await import("./commands/container.js")).runCommand,
  exec: async () => (await import("./commands/container.js")).execCommand,
  rm: async () => (await import("./commands/container.js")).rmCommand,
  ps: async () => (await import("./commands/container.js")).psCommand,
  status: async () => (await import("./commands/status.js")).statusCommand,
};

/** `callsOut`: whether the service calls other services, which then need its callers' trace context. */
const serviceCommands: Record<string, { service: string; callsOut: boolean; load: () => Promise<Command> }> = {
  ipam: { service: "trellis-ipam", callsOut: false, load: async () => (await import("./commands/services.js")).ipamCommand },
  planner: { service: "trellis-planner", callsOut: true, load: async () => (await import("./commands/services.js")).plannerCommand },
  agent: { service: "trellis-agent", callsOut: true, load: async () => (await import("./commands/services.js")).agentCommand },
  up: { service: "trellis", callsOut: true, load: async () => (await import("./commands/services.js")).upCommand },
};

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    console.log(USAGE);
    return name ? 0 : 2;
  }
  if (name === "certs") return (await import("./commands/certs.js")).certsCommand(rest);
  if (name === "nats") return (await import("./commands/nats.js")).natsCommand(rest);
  if (name === "cni") return (await import("./commands/cni.js")).cniCommand(rest);
  if (name === "docker-plugin") return (await import("../docker-plugin/main.js")).dockerPluginCommand(rest);
  if (name === "lab") return (await import("../lab/cli.js")).runLabCommand(rest);
  if (name === "host") return (await import("../lab/cli.js")).runHostCommand(rest);
  const loadClient = clientCommands[name];
  if (loadClient) {
    const client = await loadClient();
    await startTracing({ serviceName: "trellis-cli" });
    try {
      const spanName = name === "network" ? `cli.network.${rest[0] ?? ""}` : `cli.${name}`;
      return await withSpan(spanName, { "cli.args": argv.join(" ") }, () => client(rest));
    } finally {
      await stopTracing();
    }
  }
  const service = serviceCommands[name];
  if (service) {
    const run = await service.load();
    await startTracing({ serviceName: service.service, passesContextOn: service.callsOut });
    try {
      return await run(rest);
    } finally {
      await stopTracing();
    }
  }
  throw new UsageError(`unknown command "${name}"`, USAGE);
}

silenceIpServerNameWarning();
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: unknown) => {
    if (error instanceof UsageError) {
      console.error(`Error: ${error.message}\n${error.usage}`);
      process.exit(2);
    }
    // Loaded only now: an agent, which speaks no gRPC, need not hold grpc-js for its last words.
    void import("../../libs/grpc/status-error.js")
      .then(({ describeError }) => describeError(error), () => String((error as Error).message ?? error))
      .then((message) => {
        console.error(`Error: ${message}`);
        process.exit(1);
      });
  },
);
