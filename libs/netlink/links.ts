import { AttrStream, FlagsNew, ifla, putU16, putU32, getU16, getU32, rt, type RtNetlinkSocket, type StreamData } from "./package.js";
import { closeSync } from "node:fs";
import { invalidArgument, request } from "./errors.js";
import { moduleOf } from "./kinds.js";
import { openNamespace } from "./netns.js";
import type { IpvlanFlag, IpvlanMode, Link } from "./types.js";

const IPVLAN_MODES: readonly IpvlanMode[] = ["l2", "l3", "l3s"]; // index = IPVLAN_MODE_* value
// IFLA_IPVLAN_FLAGS bits (linux/if_link.h); bridge is the absence of both.
const IPVLAN_F_PRIVATE = 0x01;
const IPVLAN_F_VEPA = 0x02;

export function toBuffer(data: StreamData): Buffer {
  const stream = new AttrStream();
  stream.emit(data);
  return Buffer.concat(stream.bufs);
}

export function encodeIpvlanFlag(flag: IpvlanFlag): number {
  return flag === "private" ? IPVLAN_F_PRIVATE : flag === "vepa" ? IPVLAN_F_VEPA : 0;
}

export function decodeIpvlanFlag(bits: number): IpvlanFlag {
  return bits & IPVLAN_F_PRIVATE ? "private" : bits & IPVLAN_F_VEPA ? "vepa" : "bridge";
}

/** IFLA_LINKINFO for an ipvlan: kind plus IFLA_IPVLAN_MODE (u16) and IFLA_IPVLAN_FLAGS (u16). */
export function encodeIpvlanInfo(mode: IpvlanMode, flag: IpvlanFlag): Buffer {
  const data = toBuffer(ifla.formatIpvlan({ mode: IPVLAN_MODES.indexOf(mode), flags: putU16(encodeIpvlanFlag(flag)) }));
  return toBuffer(ifla.formatInfo({ kind: "ipvlan", data }));
}

/** IFLA_LINKINFO for an 802.1Q sub-interface: kind plus IFLA_VLAN_ID (u16). */
export function encodeVlanInfo(vlanId: number): Buffer {
  return toBuffer(ifla.formatInfo({ kind: "vlan", data: toBuffer(ifla.formatVlan({ id: vlanId })) }));
}

export function encodeKindInfo(kind: string): Buffer {
  return toBuffer(ifla.formatInfo({ kind }));
}

export function decodeLink(message: rt.LinkMessage): Link {
  const { data, attrs } = message;
  const link: Link = {
    index: data.index ?? 0,
    name: attrs.ifname ?? "",
    up: data.flags?.up === true,
    mtu: attrs.mtu ?? 0,
  };
  // IFLA_LINK equal to the own index means "no lower device" (loopback, physical NICs).
  if (attrs.link && attrs.link.length === 4) {
    const parent = getU32(attrs.link);
    if (parent !== 0 && parent !== link.index) link.parentIndex = parent;
  }
  if (attrs.ifalias) link.alias = attrs.ifalias;
  if (attrs.address?.length === 6) link.mac = [...attrs.address].map((byte) => byte.toString(16).padStart(2, "0")).join(":");
  if (attrs.linkinfo) Object.assign(link, decodeLinkInfo(attrs.linkinfo));
  return link;
}

function decodeLinkInfo(linkinfo: Buffer): Pick<Link, "kind" | "ipvlan" | "vlan"> {
  const info = ifla.parseInfo(linkinfo);
  if (!info.kind) return {};
  if (info.kind === "ipvlan" && info.data) {
    const ipvlan = ifla.parseIpvlan(info.data);
    return {
      kind: info.kind,
      ipvlan: {
        mode: IPVLAN_MODES[ipvlan.mode ?? 0] ?? "l2",
        flag: decodeIpvlanFlag(ipvlan.flags && ipvlan.flags.length >= 2 ? getU16(ipvlan.flags) : 0),
      },
    };
  }
  if (info.kind === "vlan" && info.data) {
    const vlan = ifla.parseVlan(info.data);
    if (vlan.id !== undefined) return { kind: info.kind, vlan: { id: vlan.id } };
  }
  return { kind: info.kind };
}

export async function listLinks(socket: RtNetlinkSocket): Promise<Link[]> {
  const messages = await request("list links", () => socket.getLinks());
  return messages.map(decodeLink);
}

export async function getLink(socket: RtNetlinkSocket, name: string): Promise<Link | undefined> {
  try {
    const [message] = await request(`get link ${name}`, () => socket.getLink({}, { ifname: name }));
    return message && decodeLink(message);
  } catch (error) {
    if ((error as { code?: string }).code === "ENODEV") return undefined;
    throw error;
  }
}

export interface NewLink {
  name: string;
  kind: string;
  linkinfo: Buffer;
  parentIndex?: number;
  /** Namespace (name or path) the link is born in, instead of the socket's. */
  targetNetns?: string;
}

/** RTM_NEWLINK with CREATE|EXCL: an existing name is EEXIST, never silently reused. */
export async function createLink(socket: RtNetlinkSocket, spec: NewLink, action: string): Promise<void> {
  validateName(action, spec.name);
  const fd = spec.targetNetns === undefined ? undefined : openNamespace(spec.targetNetns);
  try {
    await request(
      action,
      () =>
        socket.newLink(
          {},
          {
            ifname: spec.name,
            linkinfo: spec.linkinfo,
            ...(spec.parentIndex === undefined ? {} : { link: putU32(spec.parentIndex) }),
            ...(fd === undefined ? {} : { netNsFd: fd }),
          },
          { flags: FlagsNew.CREATE | FlagsNew.EXCL },
        ),
      {
        // The kernel answers EOPNOTSUPP when no driver registers the kind and the module cannot be loaded.
        EOPNOTSUPP: `link kind "${spec.kind}" is not supported by this kernel (load its module: modprobe ${moduleOf(spec.kind)})`,
        ENODEV: spec.parentIndex === undefined ? undefined : `parent link ${spec.parentIndex} does not exist`,
      },
    );
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

// IFNAMSIZ is 16 including the terminating NUL; the kernel's EINVAL would not say why.
function validateName(action: string, name: string): void {
  if (name.length === 0 || Buffer.byteLength(name) > 15 || /[\s/:]/.test(name) || name === "." || name === "..") {
    throw invalidArgument(action, `invalid interface name ${JSON.stringify(name)}: 1-15 bytes without whitespace, "/" or ":"`);
  }
}

export function validateVlanId(action: string, vlanId: number): void {
  if (!Number.isInteger(vlanId) || vlanId < 1 || vlanId > 4094) {
    throw invalidArgument(action, `vlan id must be between 1-4094, received: ${vlanId}`);
  }
}

export function validateIpvlan(action: string, mode: string, flag: string): void {
  if (!IPVLAN_MODES.includes(mode as IpvlanMode)) {
    throw invalidArgument(action, `ipvlan mode must be one of l2, l3, l3s, received: ${mode}`);
  }
  if (!["bridge", "private", "vepa"].includes(flag)) {
    throw invalidArgument(action, `ipvlan flag must be one of bridge, private, vepa, received: ${flag}`);
  }
}

export async function setUp(socket: RtNetlinkSocket, index: number): Promise<void> {
  await request(`set link ${index} up`, () => socket.setLink({ index, flags: { up: true }, change: { up: true } }));
}

/** Only a link that is down can be renamed. */
export async function renameLink(socket: RtNetlinkSocket, index: number, name: string): Promise<void> {
  await request(`rename link ${index} to ${name}`, () => socket.setLink({ index }, { ifname: name }));
}

export async function setAlias(socket: RtNetlinkSocket, index: number, alias: string): Promise<void> {
  await request(`set alias of link ${index}`, () => socket.setLink({ index }, { ifalias: alias }));
}

export async function deleteLink(socket: RtNetlinkSocket, index: number): Promise<void> {
  await request(`delete link ${index}`, () => socket.delLink({ index }));
}
