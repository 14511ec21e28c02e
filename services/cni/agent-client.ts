import { request as httpRequest } from "node:http";
import { LOCAL_API_PATHS, type ErrorBody, type LocalCall, type LocalCalls } from "../link-agent/local-api/protocol.js";
import { CniCode, CniError } from "./errors.js";

/** STATUS must answer quickly: the agent's own look at the planner takes at most 3 s. */
const STATUS_TIMEOUT_MS = 5_000;

/**
 * One call of the host's agent's local API (services/link-agent/local-api/protocol.ts) on its unix socket. The
 * agent's failures come back as they are (code, msg, details); an agent that is not there is 50 for STATUS, else
 * 11, "try again later", as a runtime retries then.
 */
export function callAgent<K extends LocalCall>(socket: string, call: K, body: LocalCalls[K]["request"]): Promise<LocalCalls[K]["response"]> {
  return new Promise((resolve, reject) => {
    const payload = JSON.stringify(body);
    const request = httpRequest({ socketPath: socket, path: LOCAL_API_PATHS[call], method: "POST", headers: { "content-type": "application/json", "content-length": Buffer.byteLength(payload) } });
    if (call === "status") request.setTimeout(STATUS_TIMEOUT_MS, () => request.destroy(new Error(`no answer within ${STATUS_TIMEOUT_MS / 1000}s`)));
    request.on("error", (error) => reject(unreachable(socket, call, error as NodeJS.ErrnoException)));
    request.on("response", (response) => {
      const chunks: Buffer[] = [];
      response.on("data", (chunk: Buffer) => chunks.push(chunk));
      response.on("error", (error) => reject(unreachable(socket, call, error)));
      response.on("end", () => {
        const text = Buffer.concat(chunks).toString("utf8");
        let parsed: unknown;
        try {
          parsed = JSON.parse(text);
        } catch {
          return reject(new CniError(CniCode.internal, `failed to decode the answer of the agent on ${socket}: ${text.slice(0, 200)}`));
        }
        if (response.statusCode === 200) return resolve(parsed as LocalCalls[K]["response"]);
        const failure = parsed as ErrorBody;
        reject(new CniError(failure.code ?? CniCode.internal, failure.msg ?? `the agent on ${socket} answered ${response.statusCode}`, failure.details ?? ""));
      });
    });
    request.end(payload);
  });
}

function unreachable(socket: string, call: LocalCall, error: NodeJS.ErrnoException): CniError {
  const why =
    error.code === "ENOENT" || error.code === "ECONNREFUSED"
      ? `no agent serves ${socket}: start this host's agent (trellis agent), or name its socket in the config's "socket"`
      : error.code === "EACCES"
        ? `${socket} is root's alone: run the plugin as root`
        : `${socket}: ${error.message}`;
  if (call === "status") return new CniError(CniCode.notAvailable, `Trellis is not available on this host: ${why}`);
  return new CniError(CniCode.tryAgainLater, `failed to reach this host's Trellis agent: ${why}`);
}
