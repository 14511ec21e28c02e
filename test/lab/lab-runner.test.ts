import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { parseLabRunArgs, runLabCommand } from "../../services/lab/cli.js";
import { natsService, type ServiceSpec } from "../../services/lab/config.js";
import { findKernel, moduleLoadOrder } from "../../services/lab/kernel.js";
import { runLab } from "../../services/lab/runner.js";

const REPO = resolve(import.meta.dirname, "../..");
// Outside /tmp: the guest mounts its own /tmp over the host's.
const WORK = join(REPO, "test/lab/.work");

/** Stands in for a link-agent of h1 (the real one is not needed to test the lab itself). */
const STAND_IN_AGENT: ServiceSpec = {
  name: "agent-h1",
  argv: ["sh", "-c", "echo agent h1 ready; exec sleep 100000"],
  netns: "h1",
  agentHost: "h1",
  stage: 1,
};

/** Runs inside the lab: stops and restarts the stand-in agent, runs commands in a host. */
const AGENT_CHECK = `
import { readFileSync } from "node:fs";
const lab = await import(${JSON.stringify(join(REPO, "dist/services/lab/cli.js"))});
// A stopped agent stays a zombie until the lab's own process reaps it: that counts as gone.
const { isRunning: alive } = await import(${JSON.stringify(join(REPO, "dist/services/lab/process.js"))});
const pid = () => JSON.parse(readFileSync("/run/trellis-lab/agents/h1.json", "utf8")).pid;
const first = pid();
console.log("agent stop status", await lab.runLabCommand(["agent", "stop", "h1"]), "alive", alive(first));
console.log("agent start status", await lab.runLabCommand(["agent", "start", "h1"]), "new pid", pid() !== first && alive(pid()));
console.log("host exec status", await lab.runHostCommand(["exec", "h1", "sh", "-c", "exit 7"]));
console.log("missing host status", await lab.runHostCommand(["exec", "h9", "true"]));
`;

const SCRIPT = `
echo "addr of h1:"; ip -n h1 -br addr
ip netns exec h1 ping -c 1 -W 2 192.168.1.12
ip link add d0 type dummy && ip link add ipv0 link d0 type ipvlan mode l2 && ip -d link show ipv0
echo "nats from h1: $(ip netns exec h1 busybox nc -w 2 192.168.1.254 4222 </dev/null | head -c 4)"
echo "agent netns: $(ip netns identify "$(cat /run/trellis-lab/agents/h1.json | sed -n 's/.*"pid": \\([0-9]*\\).*/\\1/p')")"
echo "trellis on PATH: $(command -v trellis)"
echo "env: $TRELLIS_LAB $TRELLIS_NATS_URL $TRELLIS_PLANNER_ADDR $TRELLIS_TRACE_FILE"
node ${join(WORK, "agent-check.mjs")}
echo "written in the lab" > "$TRELLIS_LAB_OUT/result.txt"
printf "last words without a newline"
exit 3
`;

describe("lab run", () => {
  let outDir: string;
  let output: string[];
  let errors: string[];
  let status: number;

  beforeAll(async () => {
    mkdirSync(WORK, { recursive: true });
    writeFileSync(join(WORK, "runner-check.sh"), SCRIPT);
    writeFileSync(join(WORK, "agent-check.mjs"), AGENT_CHECK);
    outDir = mkdtempSync(join(tmpdir(), "trellis-lab-out-"));
    output = [];
    errors = [];
    status = await runLab({
      script: join(WORK, "runner-check.sh"),
      hosts: 2,
      upstreams: 0,
      outDir,
      verbose: false,
      timeoutSeconds: 600,
      services: [natsService(), STAND_IN_AGENT],
      onOutput: (line) => output.push(line),
      onError: (line) => errors.push(line),
    });
  });

  afterAll(() => rmSync(outDir, { recursive: true, force: true }));

  it("exits with the script's status, even after output without a final newline", () => {
    expect(status).toBe(3);
    expect(output).toContain("last words without a newline");
  });

  it("shows the script's output without the lab's markers, and no lab errors", () => {
    expect(output.filter((line) => line.includes("trellis-lab-"))).toEqual([]);
    expect(errors).toEqual([]);
  });

  it("gives each host an eth0 on the underlay, reachable from the other hosts", () => {
    const text = output.join("\n");
    expect(text).toMatch(/eth0@\S+\s+UP\s+192\.168\.1\.11\/24/);
    expect(text).toContain("1 packets transmitted, 1 received");
  });

  it("has ipvlan in its kernel", () => {
    expect(output.join("\n")).toMatch(/ipvlan\s+mode l2 bridge/);
  });

  it("serves NATS on the control address to the hosts", () => {
    expect(output).toContain("nats from h1: INFO");
  });

  it("runs agents in their host's namespace and lets the script stop and start them", () => {
    expect(output).toContain("agent netns: h1");
    expect(output).toContain("agent stop status 0 alive false");
    expect(output).toContain("agent start status 0 new pid true");
  });

  it("runs commands in a host and reports a missing host", () => {
    expect(output).toContain("host exec status 7");
    expect(output).toContain("missing host status 125");
  });

  it("gives the script the trellis CLI and the lab's environment", () => {
    expect(output).toContain("trellis on PATH: /run/trellis-lab/bin/trellis");
    expect(output).toContain(
      "env: 1 nats://192.168.1.254:4222 127.0.0.1:7710 /run/trellis-lab/out/trace.jsonl",
    );
  });

  it("shows the service logs when the script fails", () => {
    expect(output).toContain("--- /tmp/lab/logs/nats.log (last 40 lines) ---");
    expect(output.join("\n")).toContain("agent h1 ready");
  });

  it("brings files written to $TRELLIS_LAB_OUT back to the host", () => {
    expect(readFileSync(join(outDir, "result.txt"), "utf8")).toBe("written in the lab\n");
  });
});

describe("lab command line", () => {
  it("parses lab run", () => {
    expect(parseLabRunArgs(["--hosts", "3", "--upstreams", "1", "--routers", "2", "--out", "o", "--verbose", "s.sh"])).toEqual({
      script: "s.sh",
      hosts: 3,
      upstreams: 1,
      routers: 2,
      outDir: "o",
      verbose: true,
      timeoutSeconds: 1200,
      tls: false,
    });
    expect(parseLabRunArgs(["--tls", "s.sh"]).tls).toBe(true);
  });

  it("refuses a bad count, naming what would be right", () => {
    expect(() => parseLabRunArgs(["--hosts", "500", "s.sh"])).toThrow(
      "--hosts must be a whole number between 0-99, received: 500",
    );
  });

  it("refuses a script the guest could not see, before booting", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    const dir = mkdtempSync(join(tmpdir(), "trellis-lab-script-"));
    writeFileSync(join(dir, "s.sh"), "exit 0\n");
    try {
      expect(await runLabCommand(["run", join(dir, "s.sh")])).toBe(125);
      expect(String(stderr.mock.calls[0][0])).toContain("the lab hides the host's /tmp and /run");
    } finally {
      stderr.mockRestore();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("refuses lab agent outside a lab", async () => {
    const stderr = vi.spyOn(process.stderr, "write").mockImplementation(() => true);
    try {
      expect(await runLabCommand(["agent", "stop", "h1"])).toBe(125);
      expect(String(stderr.mock.calls[0][0])).toContain("not inside a lab (TRELLIS_LAB=1)");
    } finally {
      stderr.mockRestore();
    }
  });
});

describe("lab timeout", () => {
  it("stops the machine and says so", async () => {
    mkdirSync(WORK, { recursive: true });
    writeFileSync(join(WORK, "sleep.sh"), "sleep 600\n");
    const run = runLab({ script: join(WORK, "sleep.sh"), hosts: 0, upstreams: 0, verbose: false, timeoutSeconds: 1 });
    await expect(run).rejects.toThrow("failed to finish the lab: timed out after 1 s");
  });
});

describe("lab initramfs", () => {
  it("loads the 9p modules after their dependencies", () => {
    const order = moduleLoadOrder(findKernel().modulesDir, ["9p"]).map((path) => path.split("/").pop());
    expect(order.indexOf("9pnet.ko")).toBeLessThan(order.indexOf("9p.ko"));
    expect(order.at(-1)).toBe("9p.ko");
  });
});
