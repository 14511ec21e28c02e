import { ControlService, type ControlServer } from "../../libs/proto/gen/trellis/v1/control.js";
import { NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { unaryHandler } from "../../libs/grpc/serve.js";
import { callerIdentity } from "../../libs/grpc/authorise.js";
import { checkHostScope } from "./host-scope.js";
import { applyOnce } from "./intents.js";
import type { Planner } from "./planner.js";
import type { PlannerStore } from "./store.js";
import type { PlannerMetrics } from "../../libs/metrics/planner.js";
import { clusterStatus, type ClusterCounts } from "./cluster-status.js";

export { ControlService };

/** The Control API: each mutating call is an intent, applied once per intent id. */
export function controlImplementation(planner: Planner, store: PlannerStore, metrics: PlannerMetrics, counts: ClusterCounts): ControlServer {
  return {
    createNetwork: unaryHandler(async (request) => {
      const outcome = await applyOnce(store, request.intentId, () =>
        metrics.intent("create_network", async () => ({ network: await planner.createNetwork(request.spec ?? NetworkSpec.fromPartial({}), request.intentId) })),
      );
      return outcome.network!;
    }),
    deleteNetwork: unaryHandler(async (request) => {
      await applyOnce(store, request.intentId, () =>
        metrics.intent("delete_network", async () => {
          await planner.deleteNetwork(request.name);
          return {};
        }),
      );
      return {};
    }),
    inspectNetwork: unaryHandler((request) => planner.inspectNetwork(request.name)),
    listNetworks: unaryHandler(async () => ({ networks: await planner.listNetworks() })),
    attachEndpoint: unaryHandler(async (request, call) => {
      checkHostScope(callerIdentity(call), request.spec?.host ?? "", "attach");
      const outcome = await applyOnce(store, request.intentId, () =>
        metrics.intent("attach", async () => ({
          endpoint: await planner.attachEndpoint(request.spec ?? { network: "", container: "", host: "", ipv4: "", ipv6: "" }, request.intentId),
        })),
      );
      return outcome.endpoint!;
    }),
    detachEndpoint: unaryHandler(async (request, call) => {
      checkHostScope(callerIdentity(call), store.view.endpoint(request.container)?.value.host, "detach");
      await applyOnce(store, request.intentId, () =>
        metrics.intent("detach", async () => {
          await planner.detachEndpoint(request.container);
          return {};
        }),
      );
      return {};
    }),
    listEndpoints: unaryHandler(async (request) => {
      const page = await planner.listEndpoints(request.network, request.pageToken, request.pageSize);
      return { endpoints: page.endpoints, nextPageToken: page.next };
    }),
    inspectEndpoint: unaryHandler((request) => planner.inspectEndpoint(request.container)),
    getClusterStatus: unaryHandler(async (request) => clusterStatus(store.view, counts, request)),
  };
}
