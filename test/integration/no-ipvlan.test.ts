import { execFileSync, spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { makeNamespaceFindingMissingKinds } from "../support/link-kinds.js";
import { freePort } from "../support/nats-server.js";

// The development machines' kernel has no ipvlan (the lab brings its own for everything else): the place
// to prove what an agent does on such a host. Everything runs inside a namespace made here and removed
// after. On a kernel that has ipvlan there is nothing to prove, so the scenario does not run there.
// The planner refuses such a container up front once the host's heartbeat says its kernel lacks ipvlan
// (link-kinds.test.ts); this is the agent's own handling of one that reaches it all the same, placed
// before the host's first heartbeat or by an older planner: its desired state is written before the
// agent starts, with no planner in between.

const inner = new URL("../support/no-ipvlan-agent.mjs", import.meta.url).pathname;
const host = `noipvlan${process.pid}`;
const namespace = `trellis-test-${host}`;

interface Outcome {
  status: { state: string; message: string; container: string } | undefined;
  failed: boolean;
  statusWrites: number;
  namespaceLeft: boolean;
}

afterAll(() => {
  execFileSync("ip", ["netns", "del", namespace]);
});

describe.skipIf(!makeNamespaceFindingMissingKinds(namespace).includes("ipvlan"))("a host whose kernel lacks ipvlan", () => {
  let outcome: Outcome;
  let stderr = "";

  beforeAll(async () => {
    execFileSync("ip", ["-n", namespace, "link", "set", "lo", "up"]);
    const child = spawn("ip", ["netns", "exec", namespace, process.execPath, inner, host, String(await freePort())], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    const code = await new Promise<number | null>((resolve) => child.on("exit", resolve));
    if (code !== 0) throw new Error(`the agent scenario failed (exit ${code}):\n${stderr}${stdout}`);
    outcome = JSON.parse(stdout.trim().split("\n").at(-1)!) as Outcome;
  });


  it("marks the endpoint failed, not pending, saying what is missing and what to do", () => {
    expect(outcome.failed).toBe(true);
    expect(outcome.status).toMatchObject({ state: "ENDPOINT_STATE_FAILED", container: "ipv1" });
    expect(outcome.status!.message).toMatch(
      new RegExp(`^host ${host}'s kernel has no ipvlan support \\(CONFIG_IPVLAN\\); load the ipvlan module or use a kernel that has it: failed to create ipvlan link .* \\(EOPNOTSUPP\\)$`),
    );
  });

  it("reports it once: one log line and one status write, however many passes retry it", () => {
    expect(stderr.match(/kernel has no ipvlan support/g)).toHaveLength(1);
    expect(stderr).toContain(`endpoint ipv1: host ${host}'s kernel has no ipvlan support`);
    expect(outcome.statusWrites).toBe(1);
  });

  it("removes the container's namespace when the endpoint goes", () => {
    expect(outcome.namespaceLeft).toBe(false);
  });
});
