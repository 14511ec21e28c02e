import { connectBus } from "../../libs/bus/connection.js";
import { LinkAgent, type AgentOptions } from "./agent.js";

export interface RunningAgent {
  agent: LinkAgent;
  stop(): Promise<void>;
}

export async function startAgent(natsUrl: string, options: AgentOptions): Promise<RunningAgent> {
  const nc = await connectBus({ servers: natsUrl, name: `trellis-agent-${options.host}` });
  const agent = await LinkAgent.start(nc, options);
  return {
    agent,
    async stop() {
      await agent.stop();
      await nc.drain().catch(() => nc.close());
    },
  };
}
