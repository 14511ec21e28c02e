import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Role } from "../../libs/tls/identity.js";
import { makeAuthority, type TestAuthority } from "./certificates.js";

/** The users deploy/nats/trellis.conf defines, each with the variable it reads the password from. */
export const DEPLOYED_USERS = ["planner", "ipam", "controller", "agent-h1", "agent-h2", "agent-u1"];

const CLI = fileURLToPath(new URL("../../dist/bundle/trellis.js", import.meta.url));

/** A fresh password per user; a letter first, as the configuration's comments ask. */
export function freshPasswords(users: string[] = DEPLOYED_USERS): Map<string, string> {
  return new Map(users.map((user) => [user, `p${randomBytes(16).toString("hex")}`]));
}

/** agent-h1 → TRELLIS_AGENT_H1_PASSWORD, the rule the configuration's comments give. */
export function passwordVariable(user: string): string {
  return `TRELLIS_${user.toUpperCase().replaceAll("-", "_")}_PASSWORD`;
}

/** What nats-server needs in its environment to read the configuration with these passwords. */
export function passwordEnvironment(passwords: Map<string, string>): Record<string, string> {
  return Object.fromEntries([...passwords].map(([user, password]) => [passwordVariable(user), password]));
}

/**
 * The certificates the deployed NATS files need, made by `trellis certs`: the servers' (named `servers`, for
 * 127.0.0.1), and one per NATS user, under the certificate name certificateOf(user) gives.
 */
export async function deployedAuthority(users: string[], servers: string[] = ["nats"]): Promise<TestAuthority> {
  const authority = await makeAuthority("deployed-nats");
  for (const server of servers) await authority.issue(server, "nats", "127.0.0.1");
  for (const user of users) await authority.issue(certificateOf(user), roleOf(user), "127.0.0.1");
  return authority;
}

/** agent-h1 presents the certificate of host h1; every other user the one of its own name. */
export function certificateOf(user: string): string {
  return user.startsWith("agent-") ? user.slice("agent-".length) : user;
}

function roleOf(user: string): Role {
  if (user.startsWith("agent-")) return "agent";
  return user === "planner" || user === "ipam" || user === "controller" ? user : "operator";
}

/** The variables deploy/nats/trellis.conf reads its TLS files' paths from, for the server named `server`. */
export function natsServerTlsEnvironment(authority: TestAuthority, server = "nats"): Record<string, string> {
  return { TRELLIS_NATS_TLS_CA: authority.ca, TRELLIS_NATS_TLS_CERT: `${authority.dir}/${server}.crt`, TRELLIS_NATS_TLS_KEY: `${authority.dir}/${server}.key` };
}

/** What a Trellis process of `user` needs to reach the deployed NATS over TLS, as production sets it. */
export function clientTlsEnvironment(authority: TestAuthority, user: string): Record<string, string> {
  return { ...authority.environment(certificateOf(user)), TRELLIS_NATS_TLS_CA: authority.ca };
}

/** A Trellis service as production runs it: the built CLI, logged in by its environment. */
export interface TrellisService {
  /** The address it serves on, from its `ready` line. */
  address: string;
  stop(): Promise<void>;
}

/** Starts `trellis ARGS…` with `env` added, and resolves once it says it is ready. */
export function startTrellisService(args: string[], env: Record<string, string>): Promise<TrellisService> {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  return new Promise((resolve, reject) => {
    const take = (chunk: Buffer) => {
      output += chunk.toString();
      const ready = / ready on (\S+)/.exec(output);
      if (ready) resolve({ address: ready[1], stop: () => stopProcess(child) });
    };
    child.stdout.on("data", take);
    child.stderr.on("data", take);
    child.on("exit", (code) => reject(new Error(`trellis ${args[0]} exited (${code}) before it was ready:\n${output}`)));
  });
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  await new Promise((resolve) => {
    child.once("exit", resolve);
    child.kill("SIGTERM");
  });
}
