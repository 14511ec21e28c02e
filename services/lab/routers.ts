/**
 * The lab's routers (`trellis lab run --routers N`): namespaces r1…rN on the underlay, each a plain BIRD
 * with no Trellis in it that peers over BGP with every host and puts what it learns into its own kernel,
 * as a top-of-rack router would; and a client namespace behind r1, on a segment of its own.
 */
import type { LabHost } from "./config.js";

/** Every lab host is in this AS; each router has an AS of its own, so the sessions are eBGP, as to a ToR. */
export const HOST_AS = 64512;
const ROUTER_AS_BASE = 64500;
export const MAX_ROUTERS = 9;

/**
 * Short, so that the lab sees a dead host withdrawn in seconds: a session's hold time is the smaller of
 * the two sides' offers, and the hosts offer BIRD's default (240 s).
 */
export const ROUTER_HOLD_SECONDS = 6;

/** Config, control socket, pid and log of each router's BIRD: the guest's own /tmp. */
export const ROUTER_BIRD_DIR = "/tmp/lab/bird";

/** The segment behind r1 where the client lives: its only way to the containers is through r1. */
export const CLIENT = {
  name: "client",
  address: "192.168.2.10",
  address6: "fd00:2::10",
  gateway: "192.168.2.1",
  gateway6: "fd00:2::1",
  prefix: "192.168.2.0/24",
  prefix6: "fd00:2::/64",
} as const;

export interface LabRouter {
  name: string;
  address: string;
  address6: string;
  as: number;
}

export function labRouters(count: number): LabRouter[] {
  return Array.from({ length: count }, (_, index) => {
    const i = index + 1;
    return { name: `r${i}`, address: `192.168.1.${150 + i}`, address6: `fd00:1::${150 + i}`, as: ROUTER_AS_BASE + i };
  });
}

export function routerFiles(router: Pick<LabRouter, "name">): { config: string; socket: string; pidFile: string; log: string } {
  const base = `${ROUTER_BIRD_DIR}/${router.name}`;
  return { config: `${base}.conf`, socket: `${base}.ctl`, pidFile: `${base}.pid`, log: `${base}.log` };
}

/** What a host's agent is given to peer with every router: both families, as the underlay is dual-stack. */
export function bgpFlagsFor(routers: LabRouter[]): string[] {
  if (routers.length === 0) return [];
  return [`--bgp-as=${HOST_AS}`, ...routers.flatMap((router) => [`--bgp-peer=${router.address}:${router.as}`, `--bgp-peer=[${router.address6}]:${router.as}`])];
}

/**
 * A router's BIRD: an IPv4 and an IPv6 session with every host, importing all they advertise (so that a
 * test sees anything a host wrongly advertised) into its kernel, and advertising nothing back. It retries
 * a lost session after seconds, not BIRD's default minute, so that a restarted host speaker is heard soon.
 */
export function routerBirdConfig(router: LabRouter, hosts: LabHost[]): string {
  const files = routerFiles(router);
  const session = (host: LabHost, family: 4 | 6) =>
    [
      `protocol bgp ${host.name}_v${family} from trellis_hosts {`,
      `  local ${family === 4 ? router.address : router.address6} as ${router.as};`,
      `  neighbor ${family === 4 ? host.address : host.address6} as ${HOST_AS};`,
      `  ipv${family} { import all; export none; };`,
      "}",
    ].join("\n");
  return [
    `log "${files.log}" all;`,
    `router id ${router.address};`,
    "protocol device {}",
    "protocol kernel { ipv4 { import none; export all; }; }",
    "protocol kernel { ipv6 { import none; export all; }; }",
    "template bgp trellis_hosts {",
    `  hold time ${ROUTER_HOLD_SECONDS};`,
    `  keepalive time ${ROUTER_HOLD_SECONDS / 3};`,
    "  error wait time 2, 10;",
    "  connect retry time 5;",
    "}",
    ...hosts.filter((host) => host.role === "host").flatMap((host) => [session(host, 4), session(host, 6)]),
    "",
  ].join("\n");
}
