import { connect } from "node:net";
import type { LocalAnswerLine, LocalCall, LocalCalls, LocalRequestLine } from "../link-agent/local-api/protocol.js";
import { CniCode, CniError } from "./errors.js";

/** STATUS must answer quickly: the agent's own look at the planner takes at most 3 s. */
const STATUS_TIMEOUT_MS = 5_000;

/**
 * One call of the host's agent's local API (services/link-agent/local-api/protocol.ts) on its unix socket: a line
 * out, a line back. The agent's failures come back as they are (code, msg, details); an agent that is not there is
 * 50 for STATUS, else 11, "try again later", as a runtime retries then.
 */
export function callAgent<K extends LocalCall>(socket: string, call: K, request: LocalCalls[K]["request"]): Promise<LocalCalls[K]["response"]> {
  return new Promise((resolve, reject) => {
    const connection = connect(socket);
    const chunks: Buffer[] = [];
    if (call === "status") connection.setTimeout(STATUS_TIMEOUT_MS, () => connection.destroy(new Error(`no answer within ${STATUS_TIMEOUT_MS / 1000}s`)));
    connection.on("error", (error: NodeJS.ErrnoException) => reject(unreachable(socket, call, error)));
    connection.on("data", (chunk: Buffer) => chunks.push(chunk));
    connection.on("end", () => {
      try {
        resolve(answerOf<K>(socket, Buffer.concat(chunks).toString("utf8")));
      } catch (error) {
        reject(error);
      }
    });
    const line: LocalRequestLine<K> = { call, request };
    connection.end(`${JSON.stringify(line)}\n`);
  });
}

function answerOf<K extends LocalCall>(socket: string, text: string): LocalCalls[K]["response"] {
  if (text === "") throw new CniError(CniCode.tryAgainLater, `the agent on ${socket} closed the connection without an answer: it may have stopped (see its log)`);
  let answer: LocalAnswerLine<K>;
  try {
    answer = JSON.parse(text) as LocalAnswerLine<K>;
  } catch {
    throw new CniError(CniCode.internal, `failed to decode the answer of the agent on ${socket}: ${text.slice(0, 200)} (the plugin and the agent differ in version? install the agent's plugin: trellis cni install)`);
  }
  if ("response" in answer) return answer.response;
  const failure = answer.error ?? {};
  throw new CniError(failure.code ?? CniCode.internal, failure.msg ?? `the agent on ${socket} answered without a result`, failure.details ?? "");
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
