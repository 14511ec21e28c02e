import { randomBytes } from "node:crypto";
import { startService, type ServiceProcess } from "./trellis-service.js";
import type { Role } from "../../libs/tls/identity.js";
import { makeAuthority, type TestAuthority } from "./certificates.js";

/** The users deploy/nats/trellis.conf defines, each with the variable it reads the password from. */
export const DEPLOYED_USERS = ["planner", "ipam", "controller", "agent-h1", "agent-h2", "agent-u1"];

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
export type TrellisService = ServiceProcess;

/** Starts `trellis ARGS…` (ipam or planner, then its flags) with `env` added, and resolves once it says it is ready. */
export function startTrellisService(args: string[], env: Record<string, string>): Promise<TrellisService> {
  const [command, ...flags] = args;
  if (command !== "ipam" && command !== "planner") throw new Error(`startTrellisService starts ipam or planner, not ${command}`);
  return startService(command, flags, { env });
}
