import { hostname } from "node:os";
import { DEFAULT_NATS_URL } from "../../libs/bus/connection.js";
import { addressList, DEFAULT_PLANNER_ADDRESS } from "../../libs/control-client/addresses.js";
import { AGENT_SOCKET_ENV, DEFAULT_AGENT_SOCKET } from "../link-agent/local-api/protocol.js";
import { loadTls, tlsFilesFrom, type LoadedTls, type TlsSources } from "../../libs/tls/settings.js";

/** Connection settings: flags win over environment variables, which win over loopback defaults. */
export const settings = {
  natsUrl: () => process.env.TRELLIS_NATS_URL || DEFAULT_NATS_URL,
  /** The planner replicas a client tries, separated by commas. */
  plannerAddress: () => process.env.TRELLIS_PLANNER_ADDR || DEFAULT_PLANNER_ADDRESS,
  /** Where a planner started without --listen listens: TRELLIS_PLANNER_ADDR, when it names one planner only. */
  plannerListenAddress: () => {
    const addresses = addressList(settings.plannerAddress());
    if (addresses.length > 1) {
      throw new Error(`TRELLIS_PLANNER_ADDR lists several planners (${addresses.join(", ")}): give this one its own address with --listen=HOST:PORT`);
    }
    return addresses[0]!;
  },
  ipamAddress: () => process.env.TRELLIS_IPAM_ADDR || "127.0.0.1:7711",
  host: () => process.env.TRELLIS_HOST || hostname(),
  /** The agent's local API, which the CNI plugins call: TRELLIS_AGENT_SOCKET, else /run/trellis/agent.sock. */
  agentSocket: () => process.env[AGENT_SOCKET_ENV] || DEFAULT_AGENT_SOCKET,
  /** TRELLIS_TLS_CA, _CERT and _KEY, or the --tls-ca, --tls-cert and --tls-key flags; undefined for plaintext. */
  tls: (flags: TlsSources = {}): LoadedTls | undefined => {
    const files = tlsFilesFrom(flags);
    return files && loadTls(files);
  },
};
