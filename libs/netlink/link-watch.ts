import { RawNetlinkSocket } from "./package.js";
import { netlinkError } from "./errors.js";
import { inNamespace } from "./netns.js";

// The kernel's link notifications (rtnetlink multicast group RTNLGRP_LINK) of one namespace, on a socket that
// only listens: it sends nothing, so it costs nothing until a link changes there.

const NETLINK_ROUTE = 0;
const RTNLGRP_LINK = 1;
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const NLMSG_HEADER_LENGTH = 16;
const IFINFOMSG_LENGTH = 16;
const IFLA_IFNAME = 3;
const IFF_UP = 1;

export interface LinkEvent {
  type: "new" | "deleted";
  index: number;
  /** Empty when the message carried no name. */
  name: string;
  up: boolean;
}

export interface LinkWatch {
  close(): void;
}

/**
 * Calls `onEvent` for every link created, changed or deleted in `netns` (undefined: the namespace the
 * process runs in). `onLost` is told when the kernel dropped notifications (ENOBUFS): the caller must then
 * look at everything again, since any of them may be missing.
 */
export function watchLinks(netns: string | undefined, onEvent: (event: LinkEvent) => void, onLost: (error: Error) => void): LinkWatch {
  const open = () => {
    try {
      const socket = new RawNetlinkSocket(NETLINK_ROUTE);
      try {
        socket.addMembership(RTNLGRP_LINK);
      } catch (error) {
        socket.close();
        throw error;
      }
      return socket;
    } catch (cause) {
      throw netlinkError(`listen to link notifications${netns === undefined ? "" : ` in network namespace ${netns}`}`, cause);
    }
  };
  const socket = netns === undefined ? open() : inNamespace(netns, open);
  socket.on("message", (datagram: Buffer) => {
    for (const event of decodeLinkEvents(datagram)) onEvent(event);
  });
  // Without a listener an error event ends the process.
  socket.on("error", (error: Error) => onLost(error));
  socket.unref();
  return { close: () => socket.close() };
}

/** The RTM_NEWLINK and RTM_DELLINK messages of one datagram; anything else is skipped. */
export function decodeLinkEvents(datagram: Buffer): LinkEvent[] {
  const events: LinkEvent[] = [];
  for (let offset = 0; offset + NLMSG_HEADER_LENGTH <= datagram.length; ) {
    const length = datagram.readUInt32LE(offset);
    if (length < NLMSG_HEADER_LENGTH || offset + length > datagram.length) break;
    const type = datagram.readUInt16LE(offset + 4);
    if ((type === RTM_NEWLINK || type === RTM_DELLINK) && length >= NLMSG_HEADER_LENGTH + IFINFOMSG_LENGTH) {
      const body = offset + NLMSG_HEADER_LENGTH;
      events.push({
        type: type === RTM_NEWLINK ? "new" : "deleted",
        index: datagram.readInt32LE(body + 4),
        name: linkName(datagram, body + IFINFOMSG_LENGTH, offset + length),
        up: (datagram.readUInt32LE(body + 8) & IFF_UP) !== 0,
      });
    }
    offset += align(length);
  }
  return events;
}

function linkName(datagram: Buffer, start: number, end: number): string {
  for (let offset = start; offset + 4 <= end; ) {
    const length = datagram.readUInt16LE(offset);
    if (length < 4) break;
    if (datagram.readUInt16LE(offset + 2) === IFLA_IFNAME) {
      const value = datagram.subarray(offset + 4, Math.min(offset + length, end));
      const nul = value.indexOf(0);
      return value.subarray(0, nul < 0 ? value.length : nul).toString("utf8");
    }
    offset += align(length);
  }
  return "";
}

function align(length: number): number {
  return (length + 3) & ~3;
}
