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
