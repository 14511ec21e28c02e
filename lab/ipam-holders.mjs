// Prints every address IPAM holds for an endpoint in one network, one line each: ADDRESS HOST ENDPOINT-ID,
// read straight from the IPAM bucket. node lab/ipam-holders.mjs NETWORK_ID  (NATS at $TRELLIS_NATS_URL)
// Run from the repo root after `npm run build`.
import { connectBus, openBucket } from "../dist/libs/bus/connection.js";
import { codecOf } from "../dist/libs/bus/codec.js";
import { getValue } from "../dist/libs/bus/kv.js";
import { Buckets } from "../dist/libs/bus/subjects.js";
import { AddressRecord } from "../dist/libs/proto/gen/trellis/v1/ipam.js";
import { networkAddressesFilter } from "../dist/services/ipam/keys.js";

const [networkId] = process.argv.slice(2);
if (!networkId) {
  console.error("usage: node lab/ipam-holders.mjs NETWORK_ID");
  process.exit(2);
}
const nc = await connectBus({ servers: process.env.TRELLIS_NATS_URL, name: "ipam-holders", waitForServer: false });
const bucket = await openBucket(nc, Buckets.ipam);
for await (const key of await bucket.keys(networkAddressesFilter(networkId))) {
  const record = (await getValue(bucket, codecOf(AddressRecord), key))?.value;
  if (record?.endpointId) console.log(`${record.address} ${record.host} ${record.endpointId}`);
}
await nc.drain();
