export { openNetlink, type NetlinkHandle } from "./handle.js";
export { NetlinkError } from "./errors.js";
export { unsupportedLinkKinds } from "./kind-check.js";
export type { RouteChangeFailure } from "./route-socket.js";
export { describeRoute, type RouteChange } from "./routes.js";
export { createNamespace, deleteNamespace, namespaceExists, namespacePath, NETNS_RUN_DIR } from "./netns.js";
export { enableIpv6 } from "./ipv6-enable.js";
export {
  TRELLIS_ROUTE_PROTOCOL,
  type AddAddressOptions,
  type Address,
  type IpFamily,
  type IpvlanFlag,
  type IpvlanMode,
  type Link,
  type Route,
  type RouteSpec,
} from "./types.js";
export { watchLinks, type LinkEvent, type LinkWatch } from "./link-watch.js";
