import { ControlService, type ControlServer } from "../../libs/proto/gen/trellis/v1/control.js";
import { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { unaryHandler } from "../../libs/grpc/serve.js";
import { applyOnce } from "./intents.js";
import type { Planner } from "./planner.js";
import type { PlannerStore } from "./store.js";

export { ControlService };

/** The Control API: each mutating call is an intent, applied once per intent id. */
export function controlImplementation(planner: Planner, store: PlannerStore): ControlServer {
  return {
    createNetwork: unaryHandler(async (request) => {
      const outcome = await applyOnce(store, request.intentId, async () => ({
        network: await planner.createNetwork(request.spec ?? NetworkSpec.fromPartial({}), request.intentId),
      }));
      return outcome.network!;
    }),
    deleteNetwork: unaryHandler(async (request) => {
      await applyOnce(store, request.intentId, async () => {
        await planner.deleteNetwork(request.name);
        return {};
      });
      return {};
    }),
    inspectNetwork: unaryHandler((request) => planner.inspectNetwork(request.name)),
    listNetworks: unaryHandler(async () => ({ networks: await planner.listNetworks() })),
    attachEndpoint: unaryHandler(async (request) => {
      const outcome = await applyOnce(store, request.intentId, async () => ({
        endpoint: await planner.attachEndpoint(request.spec ?? { network: "", container: "", host: "", ipv4: "", ipv6: "" }, request.intentId),
      }));
      return outcome.endpoint!;
    }),
    detachEndpoint: unaryHandler(async (request) => {
      await applyOnce(store, request.intentId, async () => {
        await planner.detachEndpoint(request.container);
        return {};
      });
      return {};
    }),
    listEndpoints: unaryHandler(async (request) => {
      const page = await planner.listEndpoints(request.network, request.pageToken, request.pageSize);
      return { endpoints: page.endpoints, nextPageToken: page.next };
    }),
    inspectEndpoint: unaryHandler((request) => planner.inspectEndpoint(request.container)),
  };
}
