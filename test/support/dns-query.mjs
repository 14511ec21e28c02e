// One DNS query, over UDP or TCP, to 127.0.0.11:53 of the namespace this runs in (under nsenter), as a
// client other than busybox (which has no TCP) sees it. Usage: dns-query.mjs NAME TYPE udp|tcp.
// Prints {"rcode", "tc", "answers": [data…], "ms": from sending to the answer} as JSON.
import { createSocket } from "node:dgram";
import { connect } from "node:net";
import dnsPacket from "dns-packet";

const [name, type, transport] = process.argv.slice(2);
const query = dnsPacket.encode({ type: "query", id: 99, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type, name }] });
const sent = Date.now();
const print = (buffer) => {
  const answer = dnsPacket.decode(buffer);
  console.log(JSON.stringify({ rcode: answer.rcode, tc: answer.flag_tc, answers: answer.answers.map((record) => record.data), ms: Date.now() - sent }));
  process.exit(0);
};
setTimeout(() => {
  console.log(JSON.stringify({ error: "no answer within 5 s" }));
  process.exit(1);
}, 5_000);
if (transport === "udp") {
  const socket = createSocket("udp4");
  socket.on("message", print);
  socket.send(query, 53, "127.0.0.11");
} else {
  const socket = connect(53, "127.0.0.11", () => socket.write(Buffer.concat([Buffer.from([query.length >> 8, query.length & 0xff]), query])));
  let received = Buffer.alloc(0);
  socket.on("data", (chunk) => {
    received = Buffer.concat([received, chunk]);
    if (received.length >= 2 && received.length >= 2 + received.readUInt16BE(0)) print(received.subarray(2, 2 + received.readUInt16BE(0)));
  });
}
