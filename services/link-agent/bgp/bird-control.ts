import { createConnection } from "node:net";

/** BIRD's answer to one command: its final reply code and every line of text. */
export interface BirdReply {
  code: string;
  lines: string[];
}

const DEFAULT_TIMEOUT_MS = 10_000;

/**
 * Sends one command over BIRD's control socket (what `birdc` does) and reads the reply. Replies are lines
 * of "CODE-text" (more follows), " text" (continuation) and "CODE text" (the last); 0xxx codes mean success,
 * 8xxx and 9xxx are run-time and parse errors (BIRD's doc/reply_codes). Spawning birdc instead would cost
 * a process start per reload, which is slow under the lab's emulation.
 */
export function birdCommand(socketPath: string, command: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<BirdReply> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(socketPath);
    const lines: string[] = [];
    let buffered = "";
    let greeted = false;
    const fail = (why: string) => {
      socket.destroy();
      reject(new Error(`failed to run "${command}" on BIRD's control socket ${socketPath}: ${why}`));
    };
    socket.setTimeout(timeoutMs, () => fail(`no answer within ${timeoutMs / 1000} s (is BIRD stopped or hung?)`));
    socket.on("error", (error) => fail(error.message));
    socket.on("close", () => fail("BIRD closed the connection before its reply was complete"));
    socket.on("data", (chunk) => {
      buffered += chunk.toString("utf8");
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const line = buffered.slice(0, newline);
        buffered = buffered.slice(newline + 1);
        const parsed = /^(\d{4})([ -])(.*)$/.exec(line);
        if (!greeted) {
          // "0001 BIRD 2.0.12 ready."
          if (parsed?.[1] !== "0001") return fail(`unexpected greeting: ${line}`);
          greeted = true;
          socket.write(`${command}\n`);
          continue;
        }
        if (line.startsWith("+")) continue; // a spontaneous printout, not part of the reply
        lines.push(parsed ? parsed[3] : line.slice(1));
        if (parsed?.[2] !== " ") continue;
        socket.removeAllListeners("close");
        socket.end();
        if (/^[89]/.test(parsed[1])) return fail(`BIRD answered ${parsed[1]}: ${lines.join("; ")}`);
        return resolve({ code: parsed[1], lines });
      }
    });
  });
}
