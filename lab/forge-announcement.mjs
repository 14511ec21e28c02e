// Writes a forged route announcement straight into the routes bucket, as a rogue agent would: what HOST
// announces now, plus PREFIX... via NEXT_HOP (so that only the forged prefixes are new).
// node lab/forge-announcement.mjs HOST NEXT_HOP NETWORK_ID PREFIX...  (NATS at $TRELLIS_NATS_URL)
// Run from the repo root after `npm run build`; the lab's agents must refuse every prefix not given to HOST.
import { connectBus, openBucket } from "../dist/libs/bus/connection.js";
import { codecOf } from "../dist/libs/bus/codec.js";
import { getValue } from "../dist/libs/bus/kv.js";
import { Buckets } from "../dist/libs/bus/subjects.js";
import { RouteAnnouncement } from "../dist/libs/proto/gen/trellis/v1/routes.js";

const [host, nextHop, networkId, ...prefixes] = process.argv.slice(2);
if (!host || !nextHop || !networkId || prefixes.length === 0) {
  console.error("usage: node lab/forge-announcement.mjs HOST NEXT_HOP NETWORK_ID PREFIX...");
  process.exit(2);
}
const nc = await connectBus({ servers: process.env.TRELLIS_NATS_URL, name: "forger" });
const bucket = await openBucket(nc, Buckets.routes);
const codec = codecOf(RouteAnnouncement);
const current = (await getValue(bucket, codec, host))?.value;
const forged = [...(current?.prefixes ?? []), ...prefixes.map((prefix) => ({ networkId, prefix }))];
// NEXT_HOP replaces the host's own of its family, and its others (its IPv6 one) stay: an announcement as well-formed
// as a real one (one next hop per family), so that only what it claims is forged.
const family = (address) => (address.includes(":") ? 6 : 4);
const nextHops = [...(current?.nextHops ?? []).filter((own) => family(own) !== family(nextHop)), nextHop];
const announcement = { host, nextHops, prefixes: forged, generation: 1_000_000, announcedAt: new Date().toISOString() };
await bucket.put(host, codec.encode(announcement));
console.log(`forged: ${host} announces ${prefixes.join(" ")} via ${nextHop}`);
await nc.drain();
