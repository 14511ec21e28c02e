import { Network } from "../../../libs/proto/gen/trellis/v1/network.js";
import { controlClient, newIntentId, timeoutFlag } from "../control.js";
import { parseCommand, parseKeyValues, UsageError } from "../parse.js";
import { printTable } from "../table.js";

const CREATE_USAGE = `Usage: trellis network create [-d ipvlan] [--subnet=CIDR]... [--gateway=IP]... [--ip-range=CIDR]...
                              [--aux-address=NAME=IP]... [--internal] [--ipv6]
                              [-o parent=IF] [-o ipvlan_mode=l2|l3|l3s] [-o ipvlan_flag=bridge|private|vepa]
                              [-o ipv4_block_prefix=20-32] [-o ipv6_block_prefix=116-128] [-o host_shim=true] NAME

  --ip-range and --aux-address belong to the --subnet that contains them: automatic addresses come
  from the ip range only (at most one per subnet), and aux addresses are never given to a container.
  ipv4_block_prefix and ipv6_block_prefix (l3 and l3s only, default 26 and 122) size the blocks of
  addresses each host takes, one route per block. host_shim=true gives each host that runs a container
  on the network an interface of its own there, so that the host and its containers reach each other.`;
const USAGE = `Usage: trellis network create|ls|inspect|rm ...`;

export async function networkCommand(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case "create":
      return create(rest);
    case "ls":
    case "list":
      return list(rest);
    case "inspect":
      return inspect(rest);
    case "rm":
    case "remove":
      return remove(rest);
    default:
      throw new UsageError(sub ? `unknown command "network ${sub}"` : "missing network command", USAGE);
  }
}

async function create(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    {
      driver: { type: "string", short: "d" },
      subnet: { type: "string", multiple: true },
      gateway: { type: "string", multiple: true },
      "ip-range": { type: "string", multiple: true },
      "aux-address": { type: "string", multiple: true },
      internal: { type: "boolean" },
      ipv6: { type: "boolean" },
      opt: { type: "string", short: "o", multiple: true },
      ...timeoutFlag,
    },
    CREATE_USAGE,
  );
  if (positionals.length !== 1) throw new UsageError(`network create takes exactly one NAME, got ${positionals.length}`, CREATE_USAGE);
  const client = controlClient(values.timeout, CREATE_USAGE);
  try {
    const network = await client.createNetwork(
      {
        name: positionals[0]!,
        driver: values.driver ?? "ipvlan",
        subnets: values.subnet ?? [],
        gateways: values.gateway ?? [],
        internal: values.internal ?? false,
        ipv6: values.ipv6 ?? false,
        options: parseKeyValues(values.opt, { what: "option", example: "-o parent=eth0" }, CREATE_USAGE),
        ipRanges: values["ip-range"] ?? [],
        auxAddresses: parseKeyValues(values["aux-address"], { what: "aux address", example: "--aux-address router=192.168.1.5" }, CREATE_USAGE),
      },
      { intentId: newIntentId() },
    );
    for (const note of network.notes) console.error(`Note: ${note}`);
    console.log(network.id);
    return 0;
  } finally {
    client.close();
  }
}

async function list(argv: string[]): Promise<number> {
  const usage = "Usage: trellis network ls";
  const { values } = parseCommand(argv, timeoutFlag, usage);
  const client = controlClient(values.timeout, usage);
  try {
    const networks = await client.listNetworks();
    printTable(
      ["NETWORK ID", "NAME", "DRIVER", "MODE", "PARENT", "SUBNETS"],
      networks.map((n) => [n.id.slice(0, 12), n.name, n.driver, `${n.mode}/${n.flag}`, parentLabel(n), n.subnets.map((s) => s.cidr).join(",")]),
    );
    return 0;
  } finally {
    client.close();
  }
}

function parentLabel(network: Network): string {
  return network.internal ? `${network.parent?.name} (internal)` : (network.parent?.name ?? "");
}

async function inspect(argv: string[]): Promise<number> {
  const usage = "Usage: trellis network inspect NAME...";
  const { values, positionals } = parseCommand(argv, timeoutFlag, usage);
  if (positionals.length === 0) throw new UsageError("network inspect needs at least one NAME", usage);
  const client = controlClient(values.timeout, usage);
  try {
    const networks = [];
    for (const name of positionals) networks.push(Network.toJSON(await client.inspectNetwork(name)));
    console.log(JSON.stringify(networks, null, 2));
    return 0;
  } finally {
    client.close();
  }
}

async function remove(argv: string[]): Promise<number> {
  const usage = "Usage: trellis network rm NAME...";
  const { values, positionals } = parseCommand(argv, timeoutFlag, usage);
  if (positionals.length === 0) throw new UsageError("network rm needs at least one NAME", usage);
  const client = controlClient(values.timeout, usage);
  try {
    for (const name of positionals) {
      await client.deleteNetwork(name, { intentId: newIntentId() });
      console.log(name);
    }
    return 0;
  } finally {
    client.close();
  }
}
