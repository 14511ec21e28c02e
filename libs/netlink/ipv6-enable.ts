import { readFileSync, writeFileSync } from "node:fs";
import { netlinkError } from "./errors.js";
import { inNamespace } from "./netns.js";

/**
 * Turns IPv6 on for links of a namespace where it was turned off (disable_ipv6=1), so that an IPv6 address can be
 * added (the kernel refuses it with EACCES otherwise). Docker's libnetwork writes net.ipv6.conf.all.disable_ipv6=1
 * in every sandbox it makes, and turns it back on only for the interfaces it moves in itself; a link made there
 * by the agent inherits the off. A sysctl under /proc/sys/net is the opening thread's namespace's, so the file
 * is opened with the thread inside it (synchronously, as inNamespace requires). Only what is off is written.
 */
export function enableIpv6(netns: string, ifnames: string[]): void {
  inNamespace(netns, () => {
    for (const ifname of ifnames) {
      const path = `/proc/sys/net/ipv6/conf/${ifname}/disable_ipv6`;
      try {
        if (readFileSync(path, "utf8").trim() !== "0") writeFileSync(path, "0");
      } catch (cause) {
        throw netlinkError(`enable IPv6 on ${ifname} in ${netns}`, cause);
      }
    }
  });
}
