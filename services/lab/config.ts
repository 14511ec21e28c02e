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
/**
 * The planner the agents' local APIs (the CNI plugins' way in) call. The lab's own planner listens on the guest's
 * loopback, which the hosts' namespaces do not see: a script that runs CNI plugins (lab/cni.sh, bench-attach.sh)
 * starts a replica here, on the underlay. Nothing is asked of it until a plugin calls.
 */
export const AGENT_PLANNER_ADDR = `${CONTROL_ADDRESS}:7720`;
/** Each host's agent serves its local API on a socket of its own: the hosts share the guest's filesystem. */
export function agentSocketOf(host: string): string {
  return `/run/trellis/${host}.sock`;
}

/** Inside the guest: /run and /tmp are the guest's own tmpfs. */
export const STATE_DIR = "/run/trellis-lab";
export const AGENTS_DIR = `${STATE_DIR}/agents`;
export const BIN_DIR = `${STATE_DIR}/bin`;
export const OUT_DIR = `${STATE_DIR}/out`;
/** With --tls: the CA and every certificate and key of the lab, made on the host in the run folder (bound here). */
export const TLS_DIR = `${STATE_DIR}/host/tls`;
/** Whose certificate the lab script's `trellis` presents: an operator's. */
export const LAB_OPERATOR = "lab-operator";
export const LOG_DIR = "/tmp/lab/logs";
/** The agents' CNI attachment records: the guest's tmpfs, not the machine's /var/lib/cni (the guest's /var is the machine's, over 9p). */
export const CNI_DATA_DIR = `${STATE_DIR}/cni`;

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
  /** Added to the lab's environment for this service alone: its own certificate, with --tls. */
  env?: Record<string, string>;
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
  /** Every service, the script's `trellis` included, with mutual TLS and its own certificate from TLS_DIR. */
  tls: boolean;
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

export function natsService(tls = false): ServiceSpec {
  return {
    name: "nats",
    argv: ["nats-server", "-a", CONTROL_ADDRESS, "-p", "4222", "-js", "-sd", "/tmp/lab/js", ...(tls ? ["-c", `${TLS_DIR}/nats.conf`] : [])],
    stage: 0,
  };
}

/**
 * With --tls, nats-server asks every client for a certificate of the lab's CA. Its flags cannot give a handshake
 * more than the default half second, which emulation often needs: hence a file.
 */
export function natsTlsConfig(): string {
  const file = (name: string) => JSON.stringify(`${TLS_DIR}/${name}`);
  return `tls { cert_file: ${file("nats.crt")}, key_file: ${file("nats.key")}, ca_file: ${file("ca.crt")}, verify: true, timeout: 10 }\n`;
}

/** The environment that makes a Trellis process present NAME's certificate of TLS_DIR. */
export function certificateEnv(name: string): Record<string, string> {
  return { TRELLIS_TLS_CERT: `${TLS_DIR}/${name}.crt`, TRELLIS_TLS_KEY: `${TLS_DIR}/${name}.key` };
}

/** Who needs a certificate in a lab with TLS, and for what: NAME, role, the addresses it serves on. */
export function labCertificates(hosts: LabHost[]): { name: string; role: "nats" | "ipam" | "planner" | "agent" | "operator"; sans: string[] }[] {
  return [
    { name: "nats", role: "nats", sans: [CONTROL_ADDRESS] },
    { name: "ipam", role: "ipam", sans: ["127.0.0.1"] },
    { name: "planner", role: "planner", sans: ["127.0.0.1"] },
    { name: LAB_OPERATOR, role: "operator", sans: [] },
    ...hosts.map((host) => ({ name: host.name, role: "agent" as const, sans: [] })),
  ];
}

/**
 * The real Trellis services of a lab: NATS, IPAM, planner, and a link-agent per host and upstream.
 * IPAM and the planner start together (the planner's gRPC client connects on first use): each node
 * start costs seconds under emulation. With routers, every host's agent peers with each of them over BGP.
 */
export function defaultServices(hosts: LabHost[], cli: string[], tls = false, routers: LabRouter[] = []): ServiceSpec[] {
  const own = (name: string) => (tls ? { env: certificateEnv(name) } : {});
  return [
    natsService(tls),
    { name: "ipam", argv: [...cli, "ipam", "--nats", NATS_URL, "--listen", IPAM_ADDR], stage: 1, ...own("ipam") },
    {
      name: "planner",
      argv: [...cli, "planner", "--nats", NATS_URL, "--listen", PLANNER_ADDR, "--ipam", IPAM_ADDR],
      stage: 1,
      ...own("planner"),
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
        "--socket",
        agentSocketOf(host.name),
        ...(host.role === "upstream" ? ["--role", "upstream"] : bgpFlagsFor(routers)),
      ],
      netns: host.name,
      agentHost: host.name,
      stage: 2,
      env: { ...(tls ? certificateEnv(host.name) : {}), TRELLIS_PLANNER_ADDR: AGENT_PLANNER_ADDR, TRELLIS_CNI_DATA_DIR: CNI_DATA_DIR },
    })),
  ];
}
