import { mkdir, chmod, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { connect } from "node:net";
import { dirname } from "node:path";
import type { ChannelCredentials } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { CniCode, CniError } from "../../cni/errors.js";
import { DEFAULT_CNI_DATA_DIR } from "./attachments.js";
import { cniHandlers, type CniHandlers } from "./cni.js";
import { ControlPlane } from "./control-plane.js";
import { LOCAL_API_PATHS, type ErrorBody, type LocalCall } from "./protocol.js";

export interface LocalApiOptions {
  /** The unix socket to serve on (protocol.ts DEFAULT_AGENT_SOCKET). */
  socket: string;
  /** This agent's host. */
  host: string;
  /** The planner replicas (TRELLIS_PLANNER_ADDR), reached with `credentials`: the agent's own TLS. */
  planner: string;
  credentials?: ChannelCredentials;
  verifier?: RecordVerifier;
  /** Where the CNI attachment records live; /var/lib/cni/trellis by default. */
  dataDir?: string;
}

export interface LocalApi {
  socket: string;
  stop(): Promise<void>;
}

/** A request body is a few hundred bytes; anything near this is not the plugin's. */
const MAX_BODY_BYTES = 64 * 1024;

/**
 * Serves the local API (protocol.ts) on a unix socket that only root may open (mode 0600, in a folder made 0700),
 * with the agent's NATS connection and one Control API client for the agent's life: a CNI call then costs the
 * plugin's start-up and one local round trip, not a bundle of gRPC and NATS and their connections.
 */
export async function serveLocalApi(nc: NatsConnection, options: LocalApiOptions): Promise<LocalApi> {
  const plane = new ControlPlane(nc, { host: options.host, planner: options.planner, credentials: options.credentials, verifier: options.verifier });
  const handlers = cniHandlers(plane, { host: options.host, dataDir: options.dataDir ?? DEFAULT_CNI_DATA_DIR });
  const server = createServer((request, response) => void answer(handlers, request, response));
  try {
    await claimSocket(options.socket);
    await listen(server, options.socket);
    await chmod(options.socket, 0o600);
  } catch (error) {
    await plane.close();
    server.close();
    throw new Error(`failed to serve the agent's local API on ${options.socket}: ${(error as Error).message}`);
  }
  return {
    socket: options.socket,
    async stop() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await plane.close();
    },
  };
}

/** The socket's folder exists (made root's alone); a socket file left by a dead agent goes, a live agent's is refused. */
async function claimSocket(socket: string): Promise<void> {
  await mkdir(dirname(socket), { recursive: true, mode: 0o700 });
  if (await answers(socket)) throw new Error(`another agent serves it: stop that one, or give this one its own socket (--socket=PATH)`);
  await rm(socket, { force: true });
}

function answers(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = connect(socket);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

function listen(server: Server, socket: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(socket, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

const CALL_OF_PATH = new Map(Object.entries(LOCAL_API_PATHS).map(([call, path]) => [path, call as LocalCall]));

async function answer(handlers: CniHandlers, request: IncomingMessage, response: ServerResponse): Promise<void> {
  try {
    const call = request.method === "POST" ? CALL_OF_PATH.get(request.url ?? "") : undefined;
    if (!call) throw new CniError(CniCode.invalidEnvironment, `the agent's local API has no ${request.method} ${request.url}: the plugin and the agent differ in version; install the agent's plugin (trellis cni install)`);
    const body = checkedRequest(call, await readBody(request));
    const result = await (handlers[call] as (body: unknown) => Promise<unknown>)(body);
    reply(response, 200, result);
  } catch (error) {
    const cause = error instanceof CniError ? error : new CniError(CniCode.internal, `the agent failed: ${(error as Error).message}`);
    const body: ErrorBody = { code: cause.code, msg: cause.message, ...(cause.details ? { details: cause.details } : {}) };
    reply(response, cause.code === CniCode.internal ? 500 : 400, body);
  }
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
}

async function readBody(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES) throw new CniError(CniCode.decodeFailure, `failed to read the request: it is over ${MAX_BODY_BYTES} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch (error) {
    throw new CniError(CniCode.decodeFailure, `failed to decode the request: ${(error as Error).message}`);
  }
}

const REF = ["network", "role", "containerId", "ifname"];
/** The string fields each call must have; lists are checked on their own. */
const STRING_FIELDS: Record<LocalCall, string[]> = {
  add: [...REF, "netns", "container", "ipv4", "ipv6"],
  del: REF,
  check: [...REF, "netns"],
  status: ["network"],
  gc: ["network", "role"],
};
const LIST_FIELDS: Partial<Record<LocalCall, string[]>> = { check: ["ips", "routes"], gc: ["valid"] };
/** Names that become file names under the data folder (attachments.ts): nothing that leaves it. */
const FILE_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

function checkedRequest(call: LocalCall, body: unknown): unknown {
  const fields = body as Record<string, unknown>;
  if (typeof body !== "object" || body === null) throw new CniError(CniCode.decodeFailure, `invalid ${call} request: not a JSON object`);
  const wrong = [
    ...STRING_FIELDS[call].filter((field) => typeof fields[field] !== "string").map((field) => `${field} must be a string`),
    ...(LIST_FIELDS[call] ?? []).filter((field) => !Array.isArray(fields[field])).map((field) => `${field} must be a list`),
  ];
  if (wrong.length > 0) throw new CniError(CniCode.decodeFailure, `invalid ${call} request: ${wrong.join(", ")}`);
  for (const field of ["network", "containerId"]) {
    const value = fields[field];
    if (typeof value === "string" && !FILE_NAME.test(value)) {
      throw new CniError(CniCode.invalidConfig, `invalid ${field} "${value}": use letters, digits, "_", "." and "-", starting with a letter or digit`);
    }
  }
  if (typeof fields.ifname === "string" && fields.ifname.includes("/")) throw new CniError(CniCode.invalidConfig, `invalid ifname "${fields.ifname}": it may not hold "/"`);
  if ("role" in fields && fields.role !== "main" && fields.role !== "ipam") throw new CniError(CniCode.decodeFailure, `invalid ${call} request: role must be main or ipam`);
  return body;
}
