// Run by test/integration/cni-plugin.test.ts through `ip netns exec <namespace>`: a control plane
// (test/support/control-plane.ts: nats-server, IPAM, a planner) on that namespace's loopback, so that the CNI
// plugins the test runs there, and the main plugins (bridge, macvlan) that call them, change nothing outside it.
// Each host named on the command line gets a fresh heartbeat every second, as a running agent writes it.
// With --local-api=SOCKET,DOWN-SOCKET,DATA-DIR: the agent's local API (services/link-agent/local-api) for the first
// host on SOCKET, as its agent serves it, and one on DOWN-SOCKET whose planner is nowhere (127.0.0.1:1).
// Prints one JSON line, {planner, nats}, and runs until its stdin closes. Imports the build (dist/).
const { startControlPlane } = await import(new URL("../../dist/test/support/control-plane.js", import.meta.url).href);
const { serveLocalApi } = await import(new URL("../../dist/services/link-agent/local-api/server.js", import.meta.url).href);

const localApiFlag = process.argv.find((arg) => arg.startsWith("--local-api="));
const hosts = process.argv.slice(2).filter((arg) => arg !== localApiFlag);
const plane = await startControlPlane();
const beat = () => Promise.all(hosts.map((host) => plane.registerHost(host, "127.0.0.1", { heartbeatIntervalMs: 1000 })));
await beat();
const timer = setInterval(() => void beat().catch(() => undefined), 1000);
const localApis = [];
if (localApiFlag) {
  const [socket, downSocket, dataDir] = localApiFlag.slice("--local-api=".length).split(",");
  localApis.push(await serveLocalApi(plane.nc, { socket, host: hosts[0], planner: plane.planner.address, dataDir }));
  localApis.push(await serveLocalApi(plane.nc, { socket: downSocket, host: hosts[0], planner: "127.0.0.1:1", dataDir }));
}
process.stdout.write(`${JSON.stringify({ planner: plane.planner.address, nats: plane.nats.url })}\n`);
process.stdin.resume();
process.stdin.on("end", async () => {
  clearInterval(timer);
  for (const api of localApis) await api.stop();
  await plane.stop();
  process.exit(0);
});
