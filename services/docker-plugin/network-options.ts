import { ParentKind, type Network, type NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { bare, type PoolRecord } from "./state.js";

/** Docker's option keys (libnetwork/netlabel). */
export const GENERIC = "com.docker.network.generic";
const ENABLE_IPV6 = "com.docker.network.enable_ipv6";
const INTERNAL = "com.docker.network.internal";

/**
 * Docker names no network to its driver (neither in CreateNetwork nor later): `-o trellis.network=NAME`
 * names the Trellis network; without it, the name comes from the first subnet, which every host's
 * `docker network create` gives alike, so that they meet in one Trellis network.
 */
export const NETWORK_NAME_OPTION = "trellis.network";

/** The address spaces the IPAM half answers GetDefaultAddressSpaces with: CreateNetwork knows its pools by them. */
export const ADDRESS_SPACES = { local: "trellis-local", global: "trellis-global" };

/** One family's pool, as CreateNetwork's IPv4Data / IPv6Data give it. */
export interface IpamData {
  AddressSpace?: string;
  Pool?: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string>;
}

export interface DockerNetworkRequest {
  Options?: Record<string, unknown>;
  IPv4Data?: IpamData[] | null;
  IPv6Data?: IpamData[] | null;
}

/** `docker network create -d trellis`'s options as `trellis network create` takes them. */
export function networkSpecOf(request: DockerNetworkRequest, pools: Map<string, PoolRecord>): NetworkSpec {
  const pooled = [...(request.IPv4Data ?? []), ...(request.IPv6Data ?? [])].filter((data) => data.Pool);
  const foreign = pooled.find((data) => !Object.values(ADDRESS_SPACES).includes(data.AddressSpace ?? ""));
  if (foreign) {
    throw new Error(
      `the trellis driver takes its addresses from Trellis's cluster IPAM, but pool ${foreign.Pool} comes from address space "${foreign.AddressSpace}": add --ipam-driver=trellis (another IPAM hands out addresses per host, and two hosts would give the same one)`,
    );
  }
  const generic = driverOptions(request.Options?.[GENERIC]);
  const { [NETWORK_NAME_OPTION]: named, ...options } = generic;
  const mode = options.ipvlan_mode || "l2";
  const internal = request.Options?.[INTERNAL] === true;
  // Docker asks its IPAM for a gateway whatever the mode; Trellis has one in l2 only, and none when internal.
  const withGateway = mode === "l2" && !internal;
  const ipRanges = pooled.map((data) => pools.get(data.Pool!)?.ipRange ?? "").filter(Boolean);
  return {
    name: named ?? nameFromSubnet(pooled[0]?.Pool ?? ""),
    driver: "ipvlan",
    subnets: pooled.map((data) => data.Pool!),
    gateways: withGateway ? pooled.map((data) => bare(data.Gateway ?? "")).filter(Boolean) : [],
    internal,
    ipv6: request.Options?.[ENABLE_IPV6] === true || (request.IPv6Data ?? []).length > 0,
    options,
    ipRanges,
    // Docker sends each aux address in CIDR form (a net.IPNet); Trellis takes the address.
    auxAddresses: Object.fromEntries(pooled.flatMap((data) => Object.entries(data.AuxAddresses ?? {}).map(([name, address]) => [name, bare(address)]))),
  };
}

/** `-o key=value` reach the driver as a string map under com.docker.network.generic. */
function driverOptions(value: unknown): Record<string, string> {
  if (typeof value !== "object" || value === null) return {};
  return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([key, option]) => [key, String(option)]));
}

/** 192.168.20.0/24 → docker-192.168.20.0-24: a valid Trellis name, the same on every host. */
export function nameFromSubnet(cidr: string): string {
  if (!cidr) throw new Error(`the trellis driver needs a subnet: give --subnet (the same on every host), and -o ${NETWORK_NAME_OPTION}=NAME to name the Trellis network`);
  return `docker-${cidr.replace(/[/:]/g, "-")}`;
}

/**
 * Where the existing Trellis network differs from what this `docker network create` asked for: empty when
 * this host may join it. Only what the user gave is compared; the planner filled in the rest alike.
 */
export function differences(existing: Network, spec: NetworkSpec): string[] {
  const problems: string[] = [];
  const wantedMode = spec.options.ipvlan_mode || "l2";
  const wantedFlag = spec.options.ipvlan_flag || "bridge";
  if (existing.mode !== wantedMode) problems.push(`ipvlan_mode=${existing.mode}, not ${wantedMode}`);
  if (existing.flag !== wantedFlag) problems.push(`ipvlan_flag=${existing.flag}, not ${wantedFlag}`);
  if (spec.options.parent && existing.parent?.name !== spec.options.parent) problems.push(`parent=${existing.parent?.name || "(none)"}, not ${spec.options.parent}`);
  const subnets = existing.subnets.map((subnet) => subnet.cidr);
  for (const cidr of spec.subnets) if (!subnets.includes(cidr)) problems.push(`subnets ${subnets.join(", ")}, not ${cidr}`);
  const gateways = existing.subnets.map((subnet) => subnet.gateway).filter(Boolean);
  for (const gateway of spec.gateways) if (!gateways.includes(gateway)) problems.push(`gateway ${gateways.join(", ") || "(none)"}, not ${gateway}`);
  if (existing.internal !== spec.internal) problems.push(existing.internal ? "internal" : "not internal");
  if (existing.ipv6 !== spec.ipv6) problems.push(existing.ipv6 ? "IPv6 enabled" : "IPv4 only");
  return problems;
}

/** The options a second host's `docker network create` must give to join `network`. */
export function describeNetwork(network: Network): string {
  const subnets = network.subnets.map((subnet) => `--subnet=${subnet.cidr}${subnet.gateway ? ` --gateway=${subnet.gateway}` : ""}`);
  const parent = network.parent?.kind === ParentKind.PARENT_KIND_EXISTING || network.parent?.kind === ParentKind.PARENT_KIND_VLAN ? [`-o parent=${network.parent.name}`] : [];
  return [...subnets, ...parent, `-o ipvlan_mode=${network.mode}`, `-o ipvlan_flag=${network.flag}`, ...(network.internal ? ["--internal"] : []), ...(network.ipv6 ? ["--ipv6"] : [])].join(" ");
}
