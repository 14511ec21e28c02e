import { hostname } from "node:os";
import { DEFAULT_NATS_URL } from "../../libs/bus/connection.js";
import { DEFAULT_PLANNER_ADDRESS } from "../../libs/control-client/addresses.js";
import { parseCommand } from "../cli/parse.js";
import { settings } from "../cli/settings.js";
import type { LoadedTls } from "../../libs/tls/settings.js";
import { TrellisControlPlane } from "./control-plane.js";
import { DEFAULT_DOCKER_SOCKET } from "./container-name.js";
import { ipamHandlers } from "./ipam-driver.js";
import { driverHandlers } from "./network-driver.js";
import { SandboxJoins } from "./sandbox-join.js";
import { serve, type Handler, type PluginServer } from "./server.js";
import { DEFAULT_DATA_DIR, PluginState } from "./state.js";

/** Where Docker looks for plugins: the socket's name (trellis) is the driver's and the IPAM driver's name. */
export const DEFAULT_SOCKET = "/run/docker/plugins/trellis.sock";

const USAGE = `Usage: trellis docker-plugin [--socket=${DEFAULT_SOCKET}] [--data-dir=${DEFAULT_DATA_DIR}] [--host=NAME] [--planner=ADDR] [--nats=URL] [--docker-socket=${DEFAULT_DOCKER_SOCKET}] [--tls-ca=FILE --tls-cert=FILE --tls-key=FILE] [--log-requests]

Serves Docker's NetworkDriver and IpamDriver plugin protocols for this host, so that
  docker network create -d trellis --ipam-driver=trellis --subnet=... [-o trellis.network=NAME] NAME
creates or joins a Trellis network, and docker run --net=NAME attaches containers to it through this host's agent.
A container is named in Trellis as in Docker (asked of dockerd on --docker-socket once it starts), or
docker-<endpoint id> when another host's container has that name already.
--host defaults to TRELLIS_HOST, else the machine's name; --planner to TRELLIS_PLANNER_ADDR; --nats to TRELLIS_NATS_URL;
the --tls-* files to TRELLIS_TLS_CA, _CERT and _KEY (an operator's certificate: the plugin makes and removes networks).`;

export interface DockerPluginOptions {
  socket: string;
  dataDir: string;
  host: string;
  planner: string;
  nats: string;
  /** dockerd's API, for the names of its containers; DEFAULT_DOCKER_SOCKET if absent. */
  dockerSocket?: string;
  /** The plugin's certificate (an operator's: it makes and removes networks) and the cluster's CA; plaintext if absent. */
  tls?: LoadedTls | undefined;
  log?: (line: string) => void;
}

export interface RunningDockerPlugin {
  socket: string;
  stop(): Promise<void>;
}

export async function startDockerPlugin(options: DockerPluginOptions): Promise<RunningDockerPlugin> {
  const state = new PluginState(options.dataDir);
  const trellis = new TrellisControlPlane({ planner: options.planner, nats: options.nats, tls: options.tls });
  const joins = new SandboxJoins({ state, trellis, host: options.host, dockerSocket: options.dockerSocket ?? DEFAULT_DOCKER_SOCKET, log: options.log ?? ((line) => console.error(line)) });
  const handlers = new Map<string, Handler>([
    ["/Plugin.Activate", async () => ({ Implements: ["NetworkDriver", "IpamDriver"] })],
    ...driverHandlers({ state, trellis, host: options.host, joins }),
    ...ipamHandlers({ state, trellis, host: options.host, pendingIpv6: new Map() }),
  ]);
  // Before the socket is served: a Leave that comes at once finds the join it stops.
  await joins.resume();
  let server: PluginServer;
  try {
    server = await serve(options.socket, handlers, options.log);
  } catch (error) {
    await trellis.close();
    throw new Error(`failed to listen on ${options.socket}: ${(error as Error).message} (another plugin there? give --socket=PATH)`);
  }
  return {
    socket: server.socket,
    async stop() {
      await server.close();
      await joins.stopAll();
      await trellis.close();
    },
  };
}

export async function dockerPluginCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(
    argv,
    { socket: { type: "string" }, "data-dir": { type: "string" }, host: { type: "string" }, planner: { type: "string" }, nats: { type: "string" }, "docker-socket": { type: "string" }, "log-requests": { type: "boolean" }, "tls-ca": { type: "string" }, "tls-cert": { type: "string" }, "tls-key": { type: "string" } },
    USAGE,
  );
  const plugin = await startDockerPlugin({
    socket: values.socket ?? DEFAULT_SOCKET,
    dataDir: values["data-dir"] ?? DEFAULT_DATA_DIR,
    host: values.host ?? (process.env.TRELLIS_HOST || hostname()),
    planner: values.planner ?? (process.env.TRELLIS_PLANNER_ADDR || DEFAULT_PLANNER_ADDRESS),
    nats: values.nats ?? (process.env.TRELLIS_NATS_URL || DEFAULT_NATS_URL),
    dockerSocket: values["docker-socket"],
    tls: settings.tls({ ca: values["tls-ca"], cert: values["tls-cert"], key: values["tls-key"] }),
    log: values["log-requests"] ? (line) => console.error(line) : undefined,
  });
  console.error(`trellis docker-plugin: serving NetworkDriver and IpamDriver "trellis" on ${plugin.socket}`);
  await new Promise<void>((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => resolve());
  });
  await plugin.stop();
  return 0;
}
