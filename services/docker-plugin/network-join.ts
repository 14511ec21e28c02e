import { status as grpcStatus } from "@grpc/grpc-js";
import type { Network, NetworkSpec } from "../../libs/proto/gen/trellis/v1/network.js";
import { TrellisRefusal, type TrellisControlPlane } from "./control-plane.js";
import { describeNetwork, differences } from "./network-options.js";

/**
 * Creates the Trellis network, or joins it when another host's `docker network create` (or `trellis network
 * create`) made it with the same options; other options are refused, saying what the network already is.
 */
export async function createOrJoin(trellis: TrellisControlPlane, spec: NetworkSpec): Promise<Network> {
  try {
    return await trellis.createNetwork(spec);
  } catch (error) {
    if (!(error instanceof TrellisRefusal && error.code === grpcStatus.ALREADY_EXISTS)) throw error;
  }
  const existing = await trellis.inspectNetwork(spec.name);
  const problems = differences(existing, spec);
  if (problems.length > 0) {
    throw new Error(
      `Trellis network ${spec.name} already exists with ${problems.join("; ")}: to join it, give the same options (${describeNetwork(existing)}), or name another network with -o trellis.network=NAME`,
    );
  }
  return existing;
}

/** Whether a refusal says that the network is gone (another host's `docker network rm` deleted it). */
export function isNetworkGone(error: unknown, network: string): boolean {
  return error instanceof TrellisRefusal && error.code === grpcStatus.NOT_FOUND && error.message.includes(`network ${network} `);
}

/** Deletes the Trellis network unless containers (of any host) are on it; one already gone is fine. */
export async function deleteUnlessInUse(trellis: TrellisControlPlane, network: string): Promise<void> {
  try {
    await trellis.deleteNetwork(network);
  } catch (error) {
    const kept = error instanceof TrellisRefusal && (error.code === grpcStatus.NOT_FOUND || error.code === grpcStatus.FAILED_PRECONDITION);
    if (!kept) throw error;
  }
}
