import { connectBus } from "../../libs/bus/connection.js";
import { agentRegistry } from "../../libs/metrics/agent.js";
import { observeBus } from "../../libs/metrics/bus.js";
import { serveMetrics } from "../../libs/metrics/endpoint.js";
import { LinkAgent, type AgentOptions } from "./agent.js";
import { serveLocalApi, type LocalApiOptions } from "./local-api/server.js";

export interface RunningAgent {
  agent: LinkAgent;
  /** HOST:PORT of the metrics endpoint, when serving one. */
  metricsAddress: string | undefined;
  stop(): Promise<void>;
}

/** `metricsListen`: HOST:PORT to serve Prometheus metrics on; none when absent. `localApi`: the CNI plugins' socket. */
export async function startAgent(natsUrl: string, options: AgentOptions, metricsListen?: string, localApi?: Omit<LocalApiOptions, "host" | "verifier">): Promise<RunningAgent> {
  // First: a port already taken is said before anything else starts.
  const metrics = metricsListen === undefined ? undefined : await serveMetrics([agentRegistry], metricsListen);
  const nc = await connectBus({ servers: natsUrl, name: `trellis-agent-${options.host}` });
  // The process's one agent registry: a second agent in the process (tests) does not count its connection twice.
  if (metrics) observeBus(nc, agentRegistry);
  // Before the agent starts: a socket another agent serves is said at once. A call that comes early waits for its status.
  const local = localApi && (await serveLocalApi(nc, { ...localApi, host: options.host, verifier: options.verifier }).catch(async (error: Error) => {
    await metrics?.stop();
    await nc.close();
    throw error;
  }));
  const agent = await LinkAgent.start(nc, options);
  return {
    agent,
    metricsAddress: metrics?.address,
    async stop() {
      await metrics?.stop();
      await local?.stop();
      await agent.stop();
      await nc.drain().catch(() => nc.close());
    },
  };
}
