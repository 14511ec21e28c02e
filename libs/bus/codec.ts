import type { BinaryReader, BinaryWriter } from "@bufbuild/protobuf/wire";

/** Bytes to and from one protobuf message type: the payload of NATS messages and KV values. */
export interface MessageCodec<T> {
  encode(value: T): Uint8Array;
  decode(bytes: Uint8Array): T;
}

/** What ts-proto generates for every message type. */
interface GeneratedMessage<T> {
  encode(message: T, writer?: BinaryWriter): BinaryWriter;
  decode(input: BinaryReader | Uint8Array, length?: number): T;
}

export function codecOf<T>(type: GeneratedMessage<T>): MessageCodec<T> {
  return {
    encode: (value) => type.encode(value).finish(),
    decode: (bytes) => type.decode(bytes),
  };
}

/** Whether two encoded values are the same bytes: how writers tell that a value needs no rewrite. */
export function sameBytes(a: Uint8Array | undefined, b: Uint8Array): boolean {
  return a !== undefined && a.length === b.length && a.every((byte, i) => byte === b[i]);
}
