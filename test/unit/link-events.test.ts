import { describe, expect, it } from "vitest";
import { decodeLinkEvents } from "../../libs/netlink/link-watch.js";

/** An RTM_NEWLINK/RTM_DELLINK message as the kernel sends it: header, ifinfomsg, IFLA_IFNAME. */
function linkMessage(type: number, index: number, flags: number, name: string): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  const attribute = Buffer.alloc((4 + nameBytes.length + 3) & ~3);
  attribute.writeUInt16LE(4 + nameBytes.length, 0);
  attribute.writeUInt16LE(3, 2);
  nameBytes.copy(attribute, 4);
  const body = Buffer.alloc(16);
  body.writeInt32LE(index, 4);
  body.writeUInt32LE(flags, 8);
  const header = Buffer.alloc(16);
  header.writeUInt32LE(16 + body.length + attribute.length, 0);
  header.writeUInt16LE(type, 4);
  return Buffer.concat([header, body, attribute]);
}

describe("link notifications", () => {
  it("decodes every link message of a datagram, with index, name and whether it is up, and skips others", () => {
    const other = Buffer.alloc(20);
    other.writeUInt32LE(20, 0);
    other.writeUInt16LE(20, 4); // RTM_NEWADDR
    const datagram = Buffer.concat([linkMessage(16, 7, 1, "eth0"), other, linkMessage(17, 9, 0, "eth0.20")]);
    expect(decodeLinkEvents(datagram)).toEqual([
      { type: "new", index: 7, name: "eth0", up: true },
      { type: "deleted", index: 9, name: "eth0.20", up: false },
    ]);
  });

  it("stops at a truncated message instead of reading past the datagram", () => {
    expect(decodeLinkEvents(linkMessage(17, 3, 0, "x").subarray(0, 20))).toEqual([]);
  });
});
