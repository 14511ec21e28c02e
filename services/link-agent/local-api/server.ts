import { mkdir, chmod, rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import type { ChannelCredentials } from "@grpc/grpc-js";
import type { NatsConnection } from "@nats-io/transport-node";
import type { RecordVerifier } from "../../../libs/tls/record-signature.js";
import { CniCode, CniError } from "../../cni/errors.js";
import { CNI_DATA_DIR_ENV, DEFAULT_CNI_DATA_DIR } from "./attachments.js";
import { cniHandlers, type CniHandlers } from "./cni.js";
import { ControlPlane } from "./control-plane.js";
import { LOCAL_CALLS, type ErrorBody, type LocalAnswerLine, type LocalCall } from "./protocol.js";

export interface LocalApiOptions {
  /** The unix socket to serve on (protocol.ts DEFAULT_AGENT_SOCKET). */
  socket: string;
  /** This agent's host. */
  host: string;
  /** The planner replicas (TRELLIS_PLANNER_ADDR), reached with `credentials`: the agent's own TLS. */
  planner: string;
  credentials?: ChannelCredentials;
  verifier?: RecordVerifier;
  /** Where the CNI attachment records live; TRELLIS_CNI_DATA_DIR, else /var/lib/cni/trellis. */
  dataDir?: string;
}

export interface LocalApi {
  socket: string;
  stop(): Promise<void>;
}

/** A request line is a few hundred bytes; anything near this is not the plugin's. */
const MAX_REQUEST_BYTES = 64 * 1024;
/** A client has this long to send its request line; the answer may take as long as the call needs. */
const REQUEST_TIMEOUT_MS = 10_000;

/**
 * Serves the local API (protocol.ts) on a unix socket that only root may open (mode 0600, in a folder made 0700),
 * with the agent's NATS connection and one Control API client for the agent's life: a CNI call then costs the
 * plugin's start-up and one local round trip, not a bundle of gRPC and NATS and their connections.
 */
export async function serveLocalApi(nc: NatsConnection, options: LocalApiOptions): Promise<LocalApi> {
  const plane = new ControlPlane(nc, { host: options.host, planner: options.planner, credentials: options.credentials, verifier: options.verifier });
  const handlers = cniHandlers(plane, { host: options.host, dataDir: options.dataDir ?? (process.env[CNI_DATA_DIR_ENV] || DEFAULT_CNI_DATA_DIR) });
  const connections = new Set<Socket>();
  // Half-open: the plugin ends its side once its line is written, and the answer still goes back.
  const server = createServer({ allowHalfOpen: true }, (connection) => {
    connections.add(connection);
    connection.on("close", () => connections.delete(connection));
    // A client that goes away mid-call (a runtime's timeout) costs its connection, never the agent.
    connection.on("error", () => undefined);
    void answer(handlers, connection);
  });
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
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const connection of connections) connection.destroy();
      await closed;
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

const CALLS = new Set<string>(LOCAL_CALLS);

async function answer(handlers: CniHandlers, connection: Socket): Promise<void> {
  let answered: LocalAnswerLine;
  try {
    const line = await readRequestLine(connection);
    if (line === undefined) return void connection.end(); // a probe (claimSocket's), or a client gone
    const { call, request } = (typeof line === "object" && line !== null ? line : {}) as { call?: unknown; request?: unknown };
    if (typeof call !== "string" || !CALLS.has(call)) {
      throw new CniError(CniCode.invalidEnvironment, `the agent's local API has no call ${JSON.stringify(call)}: the plugin and the agent differ in version; install the agent's plugin (trellis cni install)`);
    }
    const body = checkedRequest(call as LocalCall, request);
    answered = { response: await (handlers[call as LocalCall] as (body: unknown) => Promise<unknown>)(body) as never };
  } catch (error) {
    const cause = error instanceof CniError ? error : new CniError(CniCode.internal, `the agent failed: ${(error as Error).message}`);
    const body: ErrorBody = { code: cause.code, msg: cause.message, ...(cause.details ? { details: cause.details } : {}) };
    answered = { error: body };
  }
  if (!connection.destroyed) connection.end(`${JSON.stringify(answered)}\n`);
}

/** The request's one line, parsed; undefined when the client closed without sending one. */
function readRequestLine(connection: Socket): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = (settle: () => void) => {
      connection.setTimeout(0);
      connection.off("data", onData).off("end", onEnd).off("error", onError);
      settle();
    };
    const parse = () => {
      const text = Buffer.concat(chunks).toString("utf8");
      const line = text.slice(0, text.indexOf("\n") === -1 ? text.length : text.indexOf("\n"));
      if (line.trim() === "") return resolve(undefined);
      try {
        resolve(JSON.parse(line));
      } catch (error) {
        reject(new CniError(CniCode.decodeFailure, `failed to decode the request: ${(error as Error).message}`));
      }
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_REQUEST_BYTES) return done(() => reject(new CniError(CniCode.decodeFailure, `failed to read the request: it is over ${MAX_REQUEST_BYTES} bytes`)));
      chunks.push(chunk);
      if (chunk.includes(0x0a)) done(parse);
    };
    const onEnd = () => done(parse);
    const onError = (error: Error) => done(() => reject(error));
    connection.setTimeout(REQUEST_TIMEOUT_MS, () => done(() => reject(new CniError(CniCode.decodeFailure, `failed to read the request: no line within ${REQUEST_TIMEOUT_MS / 1000}s`))));
    connection.on("data", onData).on("end", onEnd).on("error", onError);
  });
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
