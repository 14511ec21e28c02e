// The parts of the `netlink` package that Trellis uses, from their own files. The package's index also loads its
// nl80211 (240 KB of generated code), generic-netlink and WireGuard structures, which no Trellis process needs
// and every one of them would keep in memory for its life.
export { Flags, FlagsGet, FlagsNew, MessageType } from "netlink/dist/constants.js";
export { RawNetlinkSocket } from "netlink/dist/raw.js";
export { AttrStream, getU16, getU32, putU16, putU32, type StreamData } from "netlink/dist/structs.js";
export { createRtNetlink, type RtNetlinkSocket } from "netlink/dist/rt/rt.js";
export * as rt from "netlink/dist/rt/structs.js";
export * as ifla from "netlink/dist/rt/ifla.js";
export type { ErrnoException } from "netlink/dist/raw.js";
