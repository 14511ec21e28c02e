import { chmod, mkdir, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { dirname } from "node:path";

/** Docker's plugin protocol: every call is a POST of one JSON object, answered by one JSON object. */
export const CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json";

/** One API call's handler: the decoded request body in, the response body out. */
export type Handler = (body: Record<string, any>) => Promise<Record<string, unknown>>;

/**
 * A refusal with the field Docker reads it from: `Err` for Plugin.* and NetworkDriver.*, `Error` for
 * IpamDriver.* (libnetwork's drivers/remote and ipams/remote decode different response structs).
 */
export function errorBody(method: string, message: string): Record<string, string> {
  return method.startsWith("/IpamDriver.") ? { Error: message } : { Err: message };
}

export interface PluginServer {
  socket: string;
  close(): Promise<void>;
}

/**
 * Serves the handlers on a unix socket (Docker finds plugins by their socket's name under
 * /run/docker/plugins). A socket left by an earlier run is replaced. `log` sees every call and its answer.
 */
export async function serve(socket: string, handlers: Map<string, Handler>, log?: (line: string) => void): Promise<PluginServer> {
  await mkdir(dirname(socket), { recursive: true });
  await rm(socket, { force: true });
  const server = createServer((request, response) => void answer(handlers, request, response, log));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socket, () => resolve());
  });
  // dockerd runs as root; nobody else may drive the host's networking through this socket.
  await chmod(socket, 0o660);
  return { socket, close: () => closeServer(server, socket) };
}

async function answer(handlers: Map<string, Handler>, request: IncomingMessage, response: ServerResponse, log?: (line: string) => void): Promise<void> {
  const method = request.url ?? "";
  const handler = handlers.get(method);
  let status = 200;
  let body: Record<string, unknown>;
  try {
    const text = await readBody(request);
    log?.(`${method} ${text}`);
    if (!handler) {
      status = 404;
      body = errorBody(method, `unknown plugin call ${method}: this plugin implements ${[...handlers.keys()].join(", ")}`);
    } else {
      body = await handler(parseBody(text, method));
    }
  } catch (error) {
    // Docker takes a refusal from the body of a 200: a status other than 200 reads as a broken plugin.
    body = errorBody(method, (error as Error).message);
  }
  const json = JSON.stringify(body);
  log?.(`${method} -> ${json}`);
  response.writeHead(status, { "Content-Type": CONTENT_TYPE, "Content-Length": Buffer.byteLength(json) });
  response.end(json);
}

function readBody(request: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    request.on("error", reject);
  });
}

/** Docker sends `null` (a nil struct) for calls without a body, e.g. Plugin.Activate. */
function parseBody(text: string, method: string): Record<string, any> {
  if (text.trim() === "" || text.trim() === "null") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new Error(`failed to decode the body of ${method}: ${(error as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) throw new Error(`failed to decode the body of ${method}: it is not a JSON object`);
  return parsed as Record<string, any>;
}

async function closeServer(server: Server, socket: string): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await rm(socket, { force: true });
}
