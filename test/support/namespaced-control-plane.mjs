// Run by test/integration/cni-plugin.test.ts through `ip netns exec <namespace>`: a control plane
// (test/support/control-plane.ts: nats-server, IPAM, a planner) on that namespace's loopback, so that the CNI
// plugins the test runs there, and the main plugins (bridge, macvlan) that call them, change nothing outside it.
// Each host named on the command line gets a fresh heartbeat every second, as a running agent writes it.
// Prints one JSON line, {planner, nats}, and runs until its stdin closes. Imports the build (dist/).
const { startControlPlane } = await import(new URL("../../dist/test/support/control-plane.js", import.meta.url).href);

const hosts = process.argv.slice(2);
const plane = await startControlPlane();
const beat = () => Promise.all(hosts.map((host) => plane.registerHost(host, "127.0.0.1", { heartbeatIntervalMs: 1000 })));
await beat();
const timer = setInterval(() => void beat().catch(() => undefined), 1000);
process.stdout.write(`${JSON.stringify({ planner: plane.planner.address, nats: plane.nats.url })}\n`);
process.stdin.resume();
process.stdin.on("end", async () => {
  clearInterval(timer);
  await plane.stop();
  process.exit(0);
});
