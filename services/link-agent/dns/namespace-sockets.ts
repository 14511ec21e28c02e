import { closeSync } from "node:fs";
import { createSocket, type Socket as UdpSocket } from "node:dgram";
import { createServer, type Server as TcpServer, type Socket as TcpSocket } from "node:net";
import koffi from "koffi";
import { inNamespace } from "../../../libs/netlink/netns.js";

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
// Never inherited by the programs the agent runs (ip, bird): they must not keep a container's namespace alive.
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SO_REUSEADDR = 2;

interface SocketCalls {
  socket(domain: number, type: number, protocol: number): number;
  bind(fd: number, address: Buffer, length: number): number;
  setsockopt(fd: number, level: number, name: number, value: Buffer, length: number): number;
}

let calls: SocketCalls | undefined;

function socketCalls(): SocketCalls {
  if (!calls) {
    const libc = koffi.load("libc.so.6");
    calls = {
      socket: libc.func("int socket(int, int, int)") as SocketCalls["socket"],
      bind: libc.func("int bind(int, const void *, uint32_t)") as SocketCalls["bind"],
      setsockopt: libc.func("int setsockopt(int, int, int, const void *, uint32_t)") as SocketCalls["setsockopt"],
    };
  }
  return calls;
}

/** A libc call returns -1 on failure, with the reason in errno. */
function checked(call: string, result: number): number {
  if (result >= 0) return result;
  const errno = koffi.errno();
  const code = Object.entries(koffi.os.errno).find(([, value]) => value === errno)?.[0] ?? `errno ${errno}`;
  throw Object.assign(new Error(`${call}: ${code}`), { code });
}

/** struct sockaddr_in: family (host order), port (network order), address, 8 bytes of padding. */
function sockaddrIn(address: string, port: number): Buffer {
  const buffer = Buffer.alloc(16);
  buffer.writeUInt16LE(AF_INET, 0);
  buffer.writeUInt16BE(port, 2);
  address.split(".").forEach((octet, i) => buffer.writeUInt8(Number(octet), 4 + i));
  return buffer;
}

/** A socket of `type`, bound to address:port, in the calling thread's current namespace. */
function boundSocket(type: number, address: string, port: number): number {
  const libc = socketCalls();
  const fd = checked("socket", libc.socket(AF_INET, type | SOCK_CLOEXEC, 0));
  try {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    // A restarted agent binds again at once, whatever connections of the previous one linger in TIME_WAIT.
    if (type === SOCK_STREAM) checked("setsockopt", libc.setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, one, 4));
    checked(`bind ${address}:${port}`, libc.bind(fd, sockaddrIn(address, port), 16));
    return fd;
  } catch (error) {
    closeSync(fd);
    throw error;
  }
}

export interface NamespaceListeners {
  udp: UdpSocket;
  tcp: TcpServer;
  /** Open TCP connections: each keeps the namespace alive too, so closing ends them. */
  connections: Set<TcpSocket>;
}

/**
 * A UDP socket and a listening TCP socket on address:port inside namespace `netns`. Node binds
 * asynchronously, after any setns would be undone, so the sockets are made and bound by libc while the
 * thread is in the namespace (a socket belongs to the namespace it was created in for its whole life),
 * and only then handed to Node. They keep the namespace alive: close them before it is deleted.
 */
export async function listenInNamespace(
  netns: string,
  address: string,
  port: number,
  onQuery: (message: Buffer, reply: (answer: Buffer) => void) => void,
  onConnection: (socket: TcpSocket) => void,
): Promise<NamespaceListeners> {
  const [udpFd, tcpFd] = inNamespace(netns, () => {
    const udp = boundSocket(SOCK_DGRAM, address, port);
    try {
      return [udp, boundSocket(SOCK_STREAM, address, port)];
    } catch (error) {
      closeSync(udp);
      throw error;
    }
  });
  const udp = createSocket("udp4");
  udp.on("message", (message, peer) =>
    onQuery(message, (answer) => {
      // The answer of a forwarded query may come after the namespace stopped being served.
      try {
        udp.send(answer, peer.port, peer.address);
      } catch {
        // closed meanwhile: the client asks again, or gives up
      }
    }),
  );
  udp.on("error", () => undefined);
  const connections = new Set<TcpSocket>();
  const tcp = createServer((socket) => {
    connections.add(socket);
    socket.once("close", () => connections.delete(socket));
    onConnection(socket);
  });
  try {
    await new Promise<void>((resolve, reject) => {
      udp.once("error", (error) => {
        closeSync(tcpFd);
        reject(error);
      });
      udp.bind({ fd: udpFd }, () => resolve());
    });
    await new Promise<void>((resolve, reject) => {
      tcp.once("error", reject);
      tcp.listen({ fd: tcpFd, backlog: 64 }, () => resolve());
    });
  } catch (error) {
    udp.close();
    tcp.close();
    throw error;
  }
  return { udp, tcp, connections };
}

export async function closeListeners(listeners: NamespaceListeners): Promise<void> {
  await Promise.all([
    new Promise<void>((resolve) => listeners.udp.close(() => resolve())),
    new Promise<void>((resolve) => {
      listeners.tcp.close(() => resolve());
      listeners.connections.forEach((socket) => socket.destroy());
    }),
  ]);
}
