import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { ControlApi } from "../../../libs/control-client/index.js";
import { EndpointState } from "../../../libs/proto/gen/trellis/v1/state.js";
import type { Endpoint } from "../../../libs/proto/gen/trellis/v1/network.js";
import { controlClient, newIntentId, timeoutFlag } from "../control.js";
import { waitForRemoval, waitForStatus } from "../endpoint-status.js";
import { parseCommand, UsageError } from "../parse.js";
import { settings } from "../settings.js";
import { printTable } from "../table.js";

const RUN_USAGE = `Usage: trellis run --net=NETWORK [--name=NAME] [--host=HOST] [--ip=IPv4] [--ip6=IPv6] [--rm] [-d] [-- CMD ARG...]`;

/**
 * `trellis run`: a container is a network namespace that the host's agent makes, with eth0 on the
 * network. Waits until the agent reports it configured, then runs CMD in it.
 */
export async function runCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    {
      net: { type: "string" },
      network: { type: "string" },
      name: { type: "string" },
      host: { type: "string" },
      ip: { type: "string" },
      ip6: { type: "string" },
      rm: { type: "boolean" },
      detach: { type: "boolean", short: "d" },
      // Accepted so that `docker run -it` habits work; stdin and the terminal are always passed through.
      interactive: { type: "boolean", short: "i" },
      tty: { type: "boolean", short: "t" },
      ...timeoutFlag,
    },
    RUN_USAGE,
  );
  const network = values.net ?? values.network;
  if (!network) throw new UsageError("trellis run needs --net=NETWORK", RUN_USAGE);
  const container = values.name ?? `c-${randomBytes(4).toString("hex")}`;
  const client = controlClient(values.timeout, RUN_USAGE);
  try {
    const endpoint = await client.attachEndpoint(
      { network, container, host: values.host ?? settings.host(), ipv4: values.ip ?? "", ipv6: values.ip6 ?? "" },
      { intentId: newIntentId() },
    );
    const status = await waitForStatus(endpoint);
    if (status.state !== EndpointState.ENDPOINT_STATE_READY) {
      await detach(client, endpoint);
      throw new Error(`failed to start container ${container} on host ${endpoint.host}: ${status.message}`);
    }
    if (positionals.length === 0) {
      console.log(container);
      return 0;
    }
    if (values.detach) {
      spawn("ip", ["netns", "exec", endpoint.netns, ...positionals], { stdio: "ignore", detached: true }).unref();
      console.log(container);
      return 0;
    }
    const code = await runIn(endpoint.netns, positionals);
    if (values.rm) await detach(client, endpoint);
    return code;
  } finally {
    client.close();
  }
}

export async function execCommand(argv: string[]): Promise<number> {
  const usage = "Usage: trellis exec CONTAINER CMD ARG...";
  const [container, ...command] = argv;
  if (!container || command.length === 0) throw new UsageError("trellis exec needs a CONTAINER and a CMD", usage);
  // Everything after CONTAINER is the command's own: exec takes no flags, so --timeout is the default here.
  const client = controlClient(undefined, usage);
  try {
    const endpoint = await findEndpoint(client, container);
    return await runIn(endpoint.netns, command);
  } finally {
    client.close();
  }
}

export async function rmCommand(argv: string[]): Promise<number> {
  const usage = "Usage: trellis rm CONTAINER...";
  const { values, positionals } = parseCommand(argv, { force: { type: "boolean", short: "f" }, ...timeoutFlag }, usage);
  if (positionals.length === 0) throw new UsageError("trellis rm needs at least one CONTAINER", usage);
  const client = controlClient(values.timeout, usage);
  try {
    for (const container of positionals) {
      await detach(client, await findEndpoint(client, container));
      console.log(container);
    }
    return 0;
  } finally {
    client.close();
  }
}

export async function psCommand(argv: string[]): Promise<number> {
  const usage = "Usage: trellis ps [--net=NETWORK]";
  const { values } = parseCommand(argv, { net: { type: "string" }, ...timeoutFlag }, usage);
  const client = controlClient(values.timeout, usage);
  try {
    const endpoints = await client.listEndpoints(values.net ?? "");
    printTable(
      ["CONTAINER", "NETWORK", "HOST", "ADDRESSES"],
      endpoints.map((e) => [e.container, e.networkName, e.host, e.addresses.join(",")]),
    );
    return 0;
  } finally {
    client.close();
  }
}

function findEndpoint(client: ControlApi, container: string): Promise<Endpoint> {
  return client.inspectEndpoint(container);
}

/** Removes the endpoint and waits until its host's agent has removed the namespace. */
async function detach(client: ControlApi, endpoint: Endpoint): Promise<void> {
  await client.detachEndpoint(endpoint.container, { intentId: newIntentId() });
  await waitForRemoval(endpoint);
}

function runIn(netns: string, command: string[]): Promise<number> {
  return new Promise((resolve, reject) => {
    const child = spawn("ip", ["netns", "exec", netns, ...command], { stdio: "inherit" });
    child.on("error", (error) => reject(new Error(`failed to run ${command[0]} in ${netns}: ${error.message}`)));
    child.on("exit", (code, signal) => resolve(code ?? (signal ? 128 : 1)));
  });
}
