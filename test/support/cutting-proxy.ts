import { connect, createServer, type Socket } from "node:net";

/** A loopback TCP proxy that loses one answer: see startCuttingProxy. */
export interface CuttingProxy {
  address: string;
  /** How many connections it has cut. */
  cuts(): number;
  stop(): Promise<void>;
}

/**
 * Forwards to `target` both ways until a client sends `marker` (say, an intent id, which a gRPC request
 * carries as plain bytes). That request is forwarded; whatever the server sends back after it is held back,
 * and `holdMs` later both sides are cut: the server has done the work, and the caller never hears of it, as
 * when a planner dies between applying an intent and answering. Only the first such connection is cut.
 */
export async function startCuttingProxy(target: string, marker: string, holdMs: number): Promise<CuttingProxy> {
  const [host, port] = splitAddress(target);
  const sockets = new Set<Socket>();
  let cut = 0;
  const server = createServer((client) => {
    const upstream = connect(port, host);
    sockets.add(client).add(upstream);
    let withholding = false;
    let recent = "";
    client.on("data", (chunk: Buffer) => {
      upstream.write(chunk);
      recent = (recent + chunk.toString("latin1")).slice(-(marker.length + chunk.length));
      if (cut === 0 && !withholding && recent.includes(marker)) {
        withholding = true;
        cut++;
        setTimeout(() => {
          client.destroy();
          upstream.destroy();
        }, holdMs);
      }
    });
    upstream.on("data", (chunk: Buffer) => {
      if (!withholding) client.write(chunk);
    });
    for (const [socket, other] of [[client, upstream], [upstream, client]] as const) {
      socket.on("error", () => other.destroy());
      socket.on("close", () => {
        sockets.delete(socket);
        other.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const bound = server.address();
  return {
    address: `127.0.0.1:${typeof bound === "object" && bound ? bound.port : 0}`,
    cuts: () => cut,
    stop: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

function splitAddress(address: string): [string, number] {
  const colon = address.lastIndexOf(":");
  return [address.slice(0, colon), Number(address.slice(colon + 1))];
}
