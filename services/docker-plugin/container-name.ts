import { request } from "node:http";

/** Docker's API on its own socket; dockerd answers network inspection at once, even while it starts a container. */
export const DEFAULT_DOCKER_SOCKET = "/var/run/docker.sock";
const INSPECT_TIMEOUT_MS = 5_000;
/** What Trellis accepts as a container name (the planner's rule): Docker's names fit it, up to this length. */
const TRELLIS_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;

interface NetworkInspect {
  Containers?: Record<string, { Name?: string; EndpointID?: string }>;
}

/**
 * The Docker container's name for one of its endpoints, from dockerd's own API (GET /networks/ID lists each
 * endpoint with its container's name): libnetwork tells a remote driver no name. Asked after Join has answered,
 * never inside a plugin call, where dockerd may hold the locks that answering needs. Undefined when dockerd does
 * not say, or says a name Trellis cannot take: the caller keeps `docker-<endpoint id>`, and says why.
 */
export async function dockerNameOf(socket: string, networkDockerId: string, endpointDockerId: string): Promise<{ name?: string; why?: string }> {
  let inspect: NetworkInspect;
  try {
    inspect = JSON.parse(await get(socket, `/networks/${encodeURIComponent(networkDockerId)}`)) as NetworkInspect;
  } catch (error) {
    return { why: `failed to ask dockerd on ${socket} for the container's name: ${(error as Error).message} (give --docker-socket=PATH)` };
  }
  const name = Object.values(inspect.Containers ?? {}).find((container) => container.EndpointID === endpointDockerId)?.Name;
  if (!name) return { why: `dockerd lists no container for endpoint ${endpointDockerId.slice(0, 12)} on network ${networkDockerId.slice(0, 12)}` };
  if (!TRELLIS_NAME.test(name)) return { why: `Docker's name "${name}" is not a Trellis container name (letters, digits, "_", ".", "-", at most 64)` };
  return { name };
}

function get(socket: string, path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const call = request({ socketPath: socket, path, method: "GET", timeout: INSPECT_TIMEOUT_MS }, (response) => {
      let body = "";
      response.setEncoding("utf8");
      response.on("data", (chunk: string) => (body += chunk));
      response.on("end", () => (response.statusCode === 200 ? resolve(body) : reject(new Error(`GET ${path}: ${response.statusCode} ${body.trim()}`))));
      response.on("error", reject);
    });
    call.on("timeout", () => call.destroy(new Error(`no answer in ${INSPECT_TIMEOUT_MS / 1000}s`)));
    call.on("error", reject);
    call.end();
  });
}
