import { FlagsNew, type RtNetlinkSocket, type rt } from "./package.js";
import { invalidArgument, request } from "./errors.js";
import { afOf, familyOf, formatIp, parsePrefix, type ParsedPrefix } from "./ip.js";
import type { AddAddressOptions, Address } from "./types.js";

export function decodeAddress(message: rt.AddressMessage): Address | undefined {
  const family = familyOf(message.data.family ?? 0);
  // IFA_LOCAL is the interface's own address; IFA_ADDRESS is the peer on point-to-point links.
  const bytes = message.attrs.local ?? message.attrs.address;
  if (!family || !bytes) return undefined;
  return { linkIndex: message.data.index ?? 0, cidr: `${formatIp(bytes)}/${message.data.prefixlen ?? 0}`, family };
}

function prefixOrThrow(action: string, cidr: string): ParsedPrefix {
  const prefix = parsePrefix(cidr);
  if (!prefix) throw invalidArgument(action, `invalid address ${JSON.stringify(cidr)}: expected a CIDR such as 10.0.0.2/24 or 2001:db8::2/64`);
  return prefix;
}

export async function listAddresses(socket: RtNetlinkSocket, linkIndex?: number): Promise<Address[]> {
  const messages = await request("list addresses", () => socket.getAddresses());
  return messages
    .map(decodeAddress)
    .filter((address): address is Address => address !== undefined && (linkIndex === undefined || address.linkIndex === linkIndex));
}

export async function addAddress(socket: RtNetlinkSocket, linkIndex: number, cidr: string, options: AddAddressOptions = {}): Promise<void> {
  const action = `add address ${cidr} to link ${linkIndex}`;
  const prefix = prefixOrThrow(action, cidr);
  await request(
    action,
    () =>
      socket.newAddress(
        {
          family: afOf(prefix.family),
          prefixlen: prefix.prefixLength,
          index: linkIndex,
          // IPv4 has no duplicate address detection, so NODAD only means something for IPv6.
          flags: options.nodad && prefix.family === 6 ? { nodad: true } : {},
        },
        { local: prefix.bytes, address: prefix.bytes },
        { flags: FlagsNew.CREATE | FlagsNew.EXCL },
      ),
    { ENODEV: `link ${linkIndex} does not exist` },
  );
}

export async function deleteAddress(socket: RtNetlinkSocket, linkIndex: number, cidr: string): Promise<void> {
  const action = `delete address ${cidr} from link ${linkIndex}`;
  const prefix = prefixOrThrow(action, cidr);
  await request(
    action,
    () =>
      socket.delAddress(
        { family: afOf(prefix.family), prefixlen: prefix.prefixLength, index: linkIndex },
        { local: prefix.bytes, address: prefix.bytes },
      ),
    { ENODEV: `link ${linkIndex} does not exist`, EADDRNOTAVAIL: `address ${cidr} is not on link ${linkIndex}` },
  );
}
