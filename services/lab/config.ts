import { bgpFlagsFor, type LabRouter } from "./routers.js";

/** What the host side hands to the guest (as config.json), and the lab's fixed addresses and paths. */

export const CONTROL_ADDRESS = "192.168.1.254";
export const UNDERLAY_PREFIX = 24;
/** The underlay is dual-stack, so that hosts announce IPv6 prefixes of L3 networks with an IPv6 next hop. */
export const CONTROL_ADDRESS6 = "fd00:1::254";
export const UNDERLAY_PREFIX6 = 64;
export const NATS_URL = `nats://${CONTROL_ADDRESS}:4222`;
export const PLANNER_ADDR = "127.0.0.1:7710";
export const IPAM_ADDR = "127.0.0.1:7711";

/** Inside the guest: /run and /tmp are the guest's own tmpfs. */
export const STATE_DIR = "/run/trellis-lab";
export const AGENTS_DIR = `${STATE_DIR}/agents`;
export const BIN_DIR = `${STATE_DIR}/bin`;
export const OUT_DIR = `${STATE_DIR}/out`;
export const LOG_DIR = "/tmp/lab/logs";

/** Like `docker run`: 125 means the lab failed, not the script. */
export const LAB_FAILURE = 125;

export const MAX_HOSTS = 99;
export const MAX_UPSTREAMS = 50;

export interface LabHost {
  name: string;
  address: string;
  address6: string;
  role: "host" | "upstream";
}

export interface ServiceSpec {
  name: string;
  argv: string[];
  /** Network namespace to run in (entered with nsenter, so that mounts stay shared); root namespace if absent. */
  netns?: string;
  /** Set for link-agents: their record under AGENTS_DIR lets `lab agent stop|start` act on them. */
  agentHost?: string;
  /** Services start stage by stage; all of one stage must be ready before the next starts. */
  stage: number;
}

export interface GuestConfig {
  hosts: LabHost[];
  /** With `--routers N`: BIRD routers on the underlay, and a client behind the first. */
  routers: LabRouter[];
  services: ServiceSpec[];
  script: string;
  cwd: string;
  verbose: boolean;
  hasOut: boolean;
  node: string;
  cliMain: string;
}

export function labHosts(hosts: number, upstreams: number): LabHost[] {
  return [
    ...numbered(hosts).map((i) => ({ name: `h${i}`, address: `192.168.1.${10 + i}`, address6: `fd00:1::${10 + i}`, role: "host" as const })),
    ...numbered(upstreams).map((i) => ({ name: `u${i}`, address: `192.168.1.${200 + i}`, address6: `fd00:1::${200 + i}`, role: "upstream" as const })),
  ];
}

function numbered(count: number): number[] {
  return Array.from({ length: count }, (_, index) => index + 1);
}

export function natsService(): ServiceSpec {
  return {
    name: "nats",
    argv: ["nats-server", "-a", CONTROL_ADDRESS, "-p", "4222", "-js", "-sd", "/tmp/lab/js"],
    stage: 0,
  };
}

/**
 * The real Trellis services of a lab: NATS, IPAM, planner, and a link-agent per host and upstream.
 * IPAM and the planner start together (the planner's gRPC client connects on first use): each node
 * start costs seconds under emulation. With routers, every host's agent peers with each of them over BGP.
 */
export function defaultServices(hosts: LabHost[], cli: string[], routers: LabRouter[] = []): ServiceSpec[] {
  return [
    natsService(),
    { name: "ipam", argv: [...cli, "ipam", "--nats", NATS_URL, "--listen", IPAM_ADDR], stage: 1 },
    {
      name: "planner",
      argv: [...cli, "planner", "--nats", NATS_URL, "--listen", PLANNER_ADDR, "--ipam", IPAM_ADDR],
      stage: 1,
    },
    ...hosts.map((host) => ({
      name: `agent-${host.name}`,
      argv: [
        ...cli,
        "agent",
        "--host",
        host.name,
        "--address",
        host.address,
        "--address",
        host.address6,
        "--nats",
        NATS_URL,
        ...(host.role === "upstream" ? ["--role", "upstream"] : bgpFlagsFor(routers)),
      ],
      netns: host.name,
      agentHost: host.name,
      stage: 2,
    })),
  ];
}
