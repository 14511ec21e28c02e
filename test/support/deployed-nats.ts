import { randomBytes } from "node:crypto";
import { startService, type ServiceProcess } from "./trellis-service.js";

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

/** A Trellis service as production runs it: the built CLI, logged in by its environment. */
export type TrellisService = ServiceProcess;

/** Starts `trellis ARGS…` (ipam or planner, then its flags) with `env` added, and resolves once it says it is ready. */
export function startTrellisService(args: string[], env: Record<string, string>): Promise<TrellisService> {
  const [command, ...flags] = args;
  if (command !== "ipam" && command !== "planner") throw new Error(`startTrellisService starts ipam or planner, not ${command}`);
  return startService(command, flags, { env });
}
