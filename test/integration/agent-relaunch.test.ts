import { readFileSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startNatsServer, type NatsServer } from "../support/nats-server.js";
import { startService, type ServiceProcess } from "../support/trellis-service.js";

// `trellis agent` starts its own process image again, before anything else, with one malloc arena and no
// transparent huge pages (services/link-agent/memory.ts): what an operator sees is one process that keeps its pid,
// its flags, its output and the operator's own glibc settings.

let nats: NatsServer;
const agents: ServiceProcess[] = [];

beforeAll(async () => {
  nats = await startNatsServer();
});

afterAll(async () => {
  await Promise.all(agents.map((agent) => agent.stop()));
  await nats?.stop();
});

async function startAgent(host: string, env: Record<string, string> = {}): Promise<ServiceProcess> {
  const agent = await startService("agent", [`--nats=${nats.url}`, `--host=${host}`, "--socket=off"], { nodeOptions: ["--max-old-space-size=256"], env });
  agents.push(agent);
  return agent;
}

function processOf(pid: number): { status: string; tunables: string[]; commandLine: string[] } {
  return {
    status: readFileSync(`/proc/${pid}/status`, "utf8"),
    tunables: glibcTunables(readFileSync(`/proc/${pid}/environ`, "utf8").split("\0")),
    commandLine: readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter(Boolean),
  };
}

/** GLIBC_TUNABLES's settings: glibc, parsing them at start, writes a NUL over each ":" where /proc shows them. */
function glibcTunables(environment: string[]): string[] {
  const start = environment.findIndex((entry) => entry.startsWith("GLIBC_TUNABLES="));
  if (start < 0) return [];
  const rest = environment.slice(start + 1);
  const end = rest.findIndex((entry) => !entry.startsWith("glibc."));
  return [environment[start]!.slice("GLIBC_TUNABLES=".length), ...rest.slice(0, end < 0 ? rest.length : end)].flatMap((value) => value.split(":"));
}

describe("trellis agent's own process", () => {
  it("keeps its pid, Node flags, arguments and output, and runs with one malloc arena and no transparent huge pages", async () => {
    const agent = await startAgent("relaunch-a");
    expect(agent.address).toBe("relaunch-a");
    // Said once: the relaunched agent does not start itself yet again.
    expect(agent.startOutput.match(/agent ready for host/g)).toHaveLength(1);
    const { status, tunables, commandLine } = processOf(agent.pid);
    expect(status).toMatch(/^THP_enabled:\s+0$/m);
    expect(tunables).toEqual(["glibc.malloc.arena_max=1"]);
    expect(commandLine).toEqual([process.execPath, "--max-old-space-size=256", expect.stringMatching(/dist\/bundle\/trellis\.js$/), "agent", `--nats=${nats.url}`, "--host=relaunch-a", "--socket=off", "--metrics=off"]);
  });

  it("adds its arena setting to an operator's other glibc tunables, and keeps an operator's own arena setting", async () => {
    const withOthers = await startAgent("relaunch-b", { GLIBC_TUNABLES: "glibc.malloc.tcache_count=0" });
    expect(processOf(withOthers.pid).tunables).toEqual(["glibc.malloc.tcache_count=0", "glibc.malloc.arena_max=1"]);
    const withArenas = await startAgent("relaunch-c", { GLIBC_TUNABLES: "glibc.malloc.arena_max=4" });
    const own = processOf(withArenas.pid);
    expect(own.tunables).toEqual(["glibc.malloc.arena_max=4"]);
    expect(own.status).toMatch(/^THP_enabled:\s+0$/m);
  });
});
