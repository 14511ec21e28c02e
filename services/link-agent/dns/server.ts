import { statSync } from "node:fs";
import { createSocket } from "node:dgram";
import { createServer, type Socket as TcpSocket } from "node:net";
import type { Endpoint } from "../../../libs/proto/gen/trellis/v1/network.js";
import { namespacePath } from "../../../libs/netlink/netns.js";
import { decide, failure, type Transport } from "./answer.js";
import { Forwarder, lengthOf } from "./forwarder.js";
import { NameTable } from "./name-table.js";
import { closeListeners, listenInNamespace, type NamespaceListeners } from "./namespace-sockets.js";
import { isRuntimeNamespace } from "../runtime-namespace.js";
import { countDnsAnswer, type DnsSource } from "../../../libs/metrics/agent.js";
import { ensureNetnsEtc, LOOPBACK_HOSTS, NETNS_ETC_DIR, removeNetnsEtc, removeStaleNetnsEtc } from "./netns-etc.js";
import { CONTAINER_NAMESERVER, containerResolvConf, readResolverConfig, type ResolverConfig } from "./resolv-conf.js";

const DNS_PORT = 53;
/**
 * How long the host's resolvers have, together, to answer a forwarded query before the client gets
 * SERVFAIL: less than a glibc client waits (5 s) before it asks again, enough for a recursive resolver.
 */
const FORWARD_BUDGET_MS = 2_000;
/** Forwarded queries under way at once, for the whole host: beyond, SERVFAIL at once rather than a growing queue. */
const MAX_FORWARDS = 256;
/** A container's idle DNS-over-TCP connection is closed after this, and it may hold at most so many at once. */
const TCP_IDLE_MS = 10_000;
const TCP_CONNECTIONS_PER_NAMESPACE = 16;

export interface DnsServerOptions {
  host: string;
  /** Where the containers' resolv.conf go (NETNS_ETC_DIR, which `ip netns exec` reads). */
  etcDir?: string;
  /** The host's resolvers, whom names that are not containers' are forwarded to. */
  resolvConf?: string;
}

interface ServedNamespace {
  /** Endpoint id → network id: the container sees the names of these networks only. */
  networks: Map<string, string>;
  listeners?: NamespaceListeners;
  /** The namespace's inode when the sockets were made: a namespace deleted and made again needs new ones. */
  inode?: number;
  /** Serve and stop of one namespace run one after the other. */
  queue: Promise<void>;
  /** The agent's own namespace (listenOnHost): names of all this host's networks. */
  hostWide?: boolean;
}

/**
 * The host's embedded DNS server, as Docker's at 127.0.0.11: in every container namespace of the host
 * a UDP and a TCP socket on 127.0.0.11:53, all answering from one table of the names of the host's
 * networks (fed by the names bucket's watch), and forwarding other names to the host's resolvers.
 */
export class DnsServer {
  readonly names = new NameTable();
  private readonly namespaces = new Map<string, ServedNamespace>();
  private forwardsUnderWay = 0;
  private hostListeners: NamespaceListeners | undefined;

  private constructor(
    private readonly options: DnsServerOptions,
    private readonly resolvers: ResolverConfig,
    private readonly forwarder: Forwarder,
  ) {}

  static start(options: DnsServerOptions): DnsServer {
    const resolvers = readResolverConfig(options.resolvConf ?? "/etc/resolv.conf");
    return new DnsServer(options, resolvers, new Forwarder(resolvers.nameservers, FORWARD_BUDGET_MS));
  }

  /**
   * Serves DNS in the endpoint's namespace (which exists, with lo up), to the names of its network, and
   * points the namespace's resolv.conf at it. Idempotent: a namespace already served keeps its sockets.
   */
  serve(endpoint: Endpoint): Promise<void> {
    const served = this.served(endpoint.netns);
    served.networks.set(endpoint.id, endpoint.networkId);
    return this.inOrder(served, async () => {
      // A runtime's namespace (an absolute path) gets its resolv.conf from the runtime, which the CNI result tells.
      if (!isRuntimeNamespace(endpoint.netns)) {
        await ensureNetnsEtc(this.etcDir, endpoint.netns, {
          "resolv.conf": containerResolvConf(this.resolvers, endpoint.container),
          hosts: LOOPBACK_HOSTS,
        });
      }
      const inode = inodeOf(endpoint.netns);
      if (served.listeners && served.inode === inode) return;
      if (served.listeners) await closeListeners(served.listeners);
      served.listeners = undefined;
      served.listeners = await this.listen(endpoint.netns, served);
      served.inode = inode;
    });
  }

  /**
   * Stops serving a namespace whatever endpoints it had, and removes its /etc/netns folder: for a container that
   * is gone. Must run before the namespace is deleted: open sockets would keep it (and the ipvlan inside) alive.
   */
  async release(netns: string): Promise<void> {
    const served = this.namespaces.get(netns);
    if (served) {
      served.networks.clear();
      await this.inOrder(served, () => this.closeIfUnused(netns, served));
    }
    if (!isRuntimeNamespace(netns)) await removeNetnsEtc(this.etcDir, netns);
  }

  /** The full pass: stops serving every namespace none of `endpoints` is in, and removes their /etc/netns folders. */
  async retainOnly(endpoints: Endpoint[]): Promise<void> {
    const wanted = new Set(endpoints.map((endpoint) => endpoint.id));
    for (const [netns, served] of this.namespaces) {
      for (const endpointId of served.networks.keys()) if (!wanted.has(endpointId)) served.networks.delete(endpointId);
      await this.inOrder(served, () => this.closeIfUnused(netns, served));
    }
    await removeStaleNetnsEtc(this.etcDir, this.options.host, new Set(endpoints.map((endpoint) => endpoint.netns)));
  }

  /**
   * Also answers on address:53 in the agent's own namespace, from the names of every network of this host: for a
   * dockerd whose resolv.conf names that loopback address. Docker's embedded DNS (127.0.0.11 in its containers)
   * answers its own host's containers only, and dials a loopback server of the host's resolv.conf from the host's
   * namespace: so other hosts' containers resolve through here. A single-label name that is no container's gets
   * NXDOMAIN at once (public DNS has none), so that a wrong name fails fast rather than after the forward's budget.
   */
  async listenOnHost(address: string): Promise<void> {
    const served: ServedNamespace = { networks: new Map(), queue: Promise.resolve(), hostWide: true };
    const udp = createSocket("udp4");
    udp.on("message", (message, peer) =>
      void this.answerSafely(served, message, "udp").then((answer) => answer && udp.send(answer, peer.port, peer.address, () => undefined)),
    );
    const connections = new Set<TcpSocket>();
    const tcp = createServer((socket) => {
      connections.add(socket);
      socket.once("close", () => connections.delete(socket));
      this.handleConnection(served, socket);
    });
    tcp.maxConnections = MAX_FORWARDS;
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind(DNS_PORT, address, () => resolve());
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(DNS_PORT, address, () => resolve());
      });
    } catch (error) {
      udp.close();
      tcp.close();
      throw new Error(`failed to serve DNS on ${address}:${DNS_PORT} in the agent's namespace: ${(error as Error).message} (is another server there? give another --host-dns address)`);
    }
    udp.on("error", () => undefined);
    this.hostListeners = { udp, tcp, connections };
  }

  async stop(): Promise<void> {
    if (this.hostListeners) await closeListeners(this.hostListeners);
    this.hostListeners = undefined;
    for (const [netns, served] of this.namespaces) {
      served.networks.clear();
      await this.inOrder(served, () => this.closeIfUnused(netns, served));
    }
  }

  /** How many namespaces have their sockets open. */
  get servedNamespaces(): number {
    return [...this.namespaces.values()].filter((served) => served.listeners).length;
  }

  private served(netns: string): ServedNamespace {
    let served = this.namespaces.get(netns);
    if (!served) this.namespaces.set(netns, (served = { networks: new Map(), queue: Promise.resolve() }));
    return served;
  }

  private inOrder(served: ServedNamespace, work: () => Promise<void>): Promise<void> {
    const done = served.queue.then(work);
    served.queue = done.catch(() => undefined);
    return done;
  }

  private async closeIfUnused(netns: string, served: ServedNamespace): Promise<void> {
    if (served.networks.size > 0) return;
    if (served.listeners) await closeListeners(served.listeners);
    served.listeners = undefined;
    if (this.namespaces.get(netns) === served && served.networks.size === 0) this.namespaces.delete(netns);
  }

  private async listen(netns: string, served: ServedNamespace): Promise<NamespaceListeners> {
    try {
      const listeners = await listenInNamespace(
        netns,
        CONTAINER_NAMESERVER,
        DNS_PORT,
        (message, reply) => void this.answerSafely(served, message, "udp").then((answer) => answer && reply(answer)),
        (socket) => this.handleConnection(served, socket),
      );
      listeners.tcp.maxConnections = TCP_CONNECTIONS_PER_NAMESPACE;
      return listeners;
    } catch (error) {
      throw new Error(`failed to serve DNS in namespace ${netns} on ${CONTAINER_NAMESERVER}:${DNS_PORT}: ${(error as Error).message}`);
    }
  }

  /** A container's query can never take the agent down: a failure answering it is logged, and it gets no answer. */
  private async answerSafely(served: ServedNamespace, message: Buffer, transport: Transport): Promise<Buffer | undefined> {
    try {
      return await this.handle(served, message, transport);
    } catch (error) {
      console.error(`failed to answer a DNS query over ${transport}: ${(error as Error).message}`);
      return undefined;
    }
  }

  /** The answer to one message of a container, or undefined when it gets none. */
  private async handle(served: ServedNamespace, message: Buffer, transport: Transport): Promise<Buffer | undefined> {
    const hostWide = served.hostWide === true;
    const lookup = (name: string) => (hostWide ? this.names.lookupAnywhere(name) : this.names.lookup(served.networks.values(), name));
    const decision = decide(message, transport, lookup, hostWide || this.forwarder.canForward);
    if (decision.kind === "drop") return undefined;
    if (decision.kind === "answer") return counted("local", decision.answer);
    if (hostWide && isSingleLabel(decision.query)) return counted("local", failure(decision.query, "NXDOMAIN"));
    if (!this.forwarder.canForward) return counted("local", failure(decision.query, "SERVFAIL"));
    if (this.forwardsUnderWay >= MAX_FORWARDS) return counted("local", failure(decision.query, "SERVFAIL"));
    this.forwardsUnderWay++;
    try {
      return counted("forwarded", await this.forwarder.forward(decision.query, message, transport));
    } finally {
      this.forwardsUnderWay--;
    }
  }

  /** DNS over TCP: messages framed by a two-byte length, any number per connection, answered in turn. */
  private handleConnection(served: ServedNamespace, socket: TcpSocket): void {
    let received = Buffer.alloc(0);
    let answering = Promise.resolve();
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on("error", () => socket.destroy());
    socket.on("data", (chunk) => {
      received = Buffer.concat([received, chunk]);
      while (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) {
        const message = received.subarray(2, 2 + received.readUInt16BE(0));
        received = received.subarray(2 + message.length);
        answering = answering.then(async () => {
          const answer = await this.answerSafely(served, message, "tcp");
          if (answer && !socket.destroyed) socket.write(Buffer.concat([lengthOf(answer), answer]));
        });
      }
    });
  }

  private get etcDir(): string {
    return this.options.etcDir ?? NETNS_ETC_DIR;
  }
}

function inodeOf(netns: string): number {
  try {
    return statSync(namespacePath(netns)).ino;
  } catch (error) {
    throw new Error(`failed to serve DNS in namespace ${netns}: ${(error as Error).message}; the agent makes it again on its next pass`);
  }
}

function isSingleLabel(query: { questions?: { name: string }[] }): boolean {
  return !query.questions![0]!.name.replace(/\.$/, "").includes(".");
}

function counted(source: DnsSource, answer: Buffer): Buffer {
  countDnsAnswer(source, answer);
  return answer;
}
