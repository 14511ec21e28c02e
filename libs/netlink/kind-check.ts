import { createRtNetlink, type RtNetlinkSocket } from "./package.js";
import { withSpan } from "../telemetry/tracing.js";
import { errnoCodeOf, netlinkError } from "./errors.js";
import { createLink, encodeKindInfo } from "./links.js";
import { inNewNamespace } from "./netns.js";

/**
 * The kinds among `kinds` this kernel cannot create links of. Each is really asked for, so a kind whose
 * module is not loaded yet gets loaded now, as it would on first use, instead of being reported missing.
 * It all happens in a new namespace of its own that goes with the socket: nothing of the host's is
 * touched and nothing is left behind, but for what loading a module does itself (the dummy module makes
 * `dummy0` in the first network namespace, as it would for the agent's first dummy parent).
 */
export async function unsupportedLinkKinds(kinds: readonly string[]): Promise<string[]> {
  return withSpan("netlink.link_kinds.check", { "link.kinds": kinds.join(",") }, async () => {
    const socket = openThrowawaySocket();
    try {
      const missing: string[] = [];
      for (const [index, kind] of kinds.entries()) {
        if (!(await supported(socket, kind, `probe${index}`))) missing.push(kind);
      }
      return missing;
    } finally {
      socket.socket.close();
    }
  });
}

function openThrowawaySocket(): RtNetlinkSocket {
  return inNewNamespace(() => {
    try {
      return createRtNetlink();
    } catch (cause) {
      throw netlinkError("open rtnetlink socket in a new network namespace", cause);
    }
  });
}

/**
 * A bare request for a link of `kind`, without parent or settings. The kernel answers EOPNOTSUPP exactly
 * when no driver registers the kind once it has tried to load its module (net/core/rtnetlink.c); a kind it
 * knows is either made (dummy) or refused for what the request lacks before anything is made (vlan and
 * ipvlan: no parent, EINVAL). Any other answer proves neither, and is thrown.
 */
async function supported(socket: RtNetlinkSocket, kind: string, name: string): Promise<boolean> {
  try {
    await createLink(socket, { name, kind, linkinfo: encodeKindInfo(kind) }, `create ${kind} link ${name}`);
    return true;
  } catch (error) {
    const code = errnoCodeOf(error);
    if (code === "EOPNOTSUPP") return false;
    if (code === "EINVAL") return true;
    throw error;
  }
}
