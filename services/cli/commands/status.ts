import { addressList, ControlApi } from "../../../libs/control-client/index.js";
import { clientCredentials } from "../../../libs/grpc/credentials.js";
import { describeError } from "../../../libs/grpc/status-error.js";
import type { ClusterStatus, ContainerStates, HostStatus, NetworkStatus } from "../../../libs/proto/gen/trellis/v1/control.js";
import { controlClient, timeoutFlag } from "../control.js";
import { parseCommand } from "../parse.js";
import { settings } from "../settings.js";
import { printTable } from "../table.js";

const USAGE = "Usage: trellis status [--json] [--timeout=SECONDS]";
/** How long one replica may take to answer before it is shown as not answering. */
const REPLICA_TIMEOUT_MS = 3_000;

interface PlannerReplica {
  address: string;
  /** "serving", or why not. */
  state: string;
  /** What the replica's view holds: a replica that lags shows fewer. */
  networks?: number;
  containers?: number;
}

interface Status {
  hosts: HostStatus[];
  networks: NetworkStatus[];
  containers: ContainerStates;
  planners: PlannerReplica[];
}

/**
 * `trellis status`: hosts, networks with their pools' use, containers by state and the planner replicas, from the
 * planners' memory (GetClusterStatus): the hosts come a page per call, so no one answer grows with the cluster.
 */
export async function statusCommand(argv: string[]): Promise<number> {
  const { values } = parseCommand(argv, { json: { type: "boolean" }, ...timeoutFlag }, USAGE);
  const client = controlClient(values.timeout, USAGE);
  let status: Status;
  try {
    const [cluster, planners] = await Promise.all([wholeStatus(client), replicas()]);
    status = { hosts: cluster.hosts, networks: cluster.networks, containers: cluster.containers!, planners };
  } finally {
    client.close();
  }
  if (values.json) console.log(JSON.stringify(status, null, 2));
  else printStatus(status);
  return 0;
}

/** Every page of hosts, with the networks and counts of the first answer. */
async function wholeStatus(client: ControlApi): Promise<ClusterStatus> {
  const first = await client.clusterStatus();
  const hosts = [...first.hosts];
  for (let token = first.nextHostPageToken; token !== ""; ) {
    const page = await client.clusterStatus(token);
    hosts.push(...page.hosts);
    token = page.nextHostPageToken;
  }
  return { ...first, hosts, nextHostPageToken: "" };
}

/** Each replica of TRELLIS_PLANNER_ADDR asked on its own, for one host only: whether it answers, and what it holds. */
function replicas(): Promise<PlannerReplica[]> {
  return Promise.all(
    addressList(settings.plannerAddress()).map(async (address) => {
      const one = new ControlApi({ addresses: address, credentials: clientCredentials(settings.tls()), timeoutMs: REPLICA_TIMEOUT_MS });
      try {
        const answer = await one.clusterStatus("", 1);
        return { address, state: "serving", networks: answer.networks.length, containers: answer.containers?.placed ?? 0 };
      } catch (error) {
        return { address, state: `not answering: ${describeError(error)}` };
      } finally {
        one.close();
      }
    }),
  );
}

function printStatus(status: Status): void {
  const row = (name: string, c: ContainerStates) => [name, String(c.placed), String(c.ready), String(c.pending), String(c.failed)];
  const sections: [string, string[], string[][]][] = [
    [
      "HOSTS",
      ["HOST", "ROLE", "STATE", "HEARTBEAT", "MISSING LINK KINDS"],
      status.hosts.map((host) => [host.host, host.role, host.live ? "live" : "stale", `${(host.heartbeatAgeMs / 1000).toFixed(1)}s ago`, host.missingLinkKinds.join(",") || "-"]),
    ],
    [
      "NETWORKS",
      ["NAME", "MODE", "PARENT", "SUBNET", "USED"],
      status.networks.flatMap((network) =>
        network.subnets.map((subnet) => [network.name, network.mode, network.parent, subnet.cidr, `${subnet.used}/${subnet.usable} (${percent(subnet.used, subnet.usable)})`]),
      ),
    ],
    ["CONTAINERS", ["NETWORK", "PLACED", "READY", "PENDING", "FAILED"], [...status.networks.map((network) => row(network.name, network.containers!)), row("(all)", status.containers)]],
    [
      "PLANNERS",
      ["ADDRESS", "STATE", "NETWORKS", "CONTAINERS"],
      status.planners.map((planner) => [planner.address, planner.state, String(planner.networks ?? "-"), String(planner.containers ?? "-")]),
    ],
  ];
  sections.forEach(([title, headers, rows], index) => {
    if (index > 0) console.log("");
    console.log(title);
    printTable(headers, rows);
  });
}

function percent(used: number, usable: number): string {
  return usable === 0 ? "-" : `${((100 * used) / usable).toFixed(1)}%`;
}
