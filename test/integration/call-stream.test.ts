// The multiplexed call stream over real gRPC on loopback, with a stand-in for IPAM's handler: answers
// matched by id whatever their order, failures as the unary call's status, deadlines, and a stream
// that ends under calls in flight.
import { afterEach, describe, expect, it } from "vitest";
import { status, type ServerDuplexStream, type UntypedServiceImplementation } from "@grpc/grpc-js";
import { CallStreamClient, serveCallStream } from "../../libs/grpc/call-stream.js";
import { serveGrpc, type ServingServer } from "../../libs/grpc/serve.js";
import { clientOptions, insecure } from "../../libs/grpc/unary.js";
import { invalidArgument } from "../../libs/grpc/status-error.js";
import { refusal } from "../support/refusal.js";
import { IpamClient, IpamService, type AddressCall, type AddressCallResult } from "../../libs/proto/gen/trellis/v1/ipam.js";

let server: ServingServer | undefined;
let client: IpamClient | undefined;

afterEach(async () => {
  client?.close();
  await server?.stop();
  server = client = undefined;
});

/** A server whose only method is the call stream, handled by `handle` (or by `onStream` as it is). */
async function serve(handle: (call: AddressCall) => Promise<AddressCallResult["result"] & object>, onStream?: (stream: ServerDuplexStream<AddressCall, AddressCallResult>) => void) {
  const implementation: UntypedServiceImplementation = { addressCalls: onStream ?? serveCallStream<AddressCall, AddressCallResult>(handle) };
  server = await serveGrpc(IpamService, implementation, "127.0.0.1:0");
  client = new IpamClient(server.address, insecure(), clientOptions);
  const ipam = client;
  return (timeoutMs?: number) => new CallStreamClient<AddressCall, AddressCallResult>(() => ipam.addressCalls(), timeoutMs);
}

const allocate = (endpointId: string): Omit<AddressCall, "id"> => ({
  traceparent: "",
  call: { $case: "allocateAddress", value: { networkId: "n", endpointId, host: "h1", ipv6: false, address: "" } },
});


describe("call stream", () => {
  it("answers each call by its id, whatever order the answers come in", async () => {
    const streamClient = (await serve(async (call) => {
      const endpointId = call.call?.$case === "allocateAddress" ? call.call.value.endpointId : "";
      // Later calls are answered first.
      await new Promise((resolve) => setTimeout(resolve, 50 - Number(endpointId.slice(1)) * 10));
      return { $case: "allocateAddress", value: { address: `10.0.0.${endpointId.slice(1)}/24`, subnet: "10.0.0.0/24" } };
    }))();
    const answers = await Promise.all(["e1", "e2", "e3", "e4"].map((endpointId) => streamClient.call(allocate(endpointId))));
    expect(answers.map((answer) => (answer.$case === "allocateAddress" ? answer.value.address : ""))).toEqual(["10.0.0.1/24", "10.0.0.2/24", "10.0.0.3/24", "10.0.0.4/24"]);
    streamClient.close();
  });

  it("fails a call with the status the handler threw, as a unary call would, and goes on", async () => {
    const streamClient = (await serve(async (call) => {
      if (call.call?.$case === "allocateAddress" && call.call.value.endpointId === "bad") throw invalidArgument("endpoint_id bad is refused");
      return { $case: "releaseAddresses", value: {} };
    }))();
    const failed = await refusal(streamClient.call(allocate("bad")));
    expect([failed.code, failed.details, failed.message]).toEqual([status.INVALID_ARGUMENT, "endpoint_id bad is refused", "3 INVALID_ARGUMENT: endpoint_id bad is refused"]);
    expect((await streamClient.call(allocate("good"))).$case).toBe("releaseAddresses");
    streamClient.close();
  });

  it("fails a call that gets no answer within its deadline with DEADLINE_EXCEEDED", async () => {
    const streamClient = (await serve(async () => {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return { $case: "releaseAddresses", value: {} };
    }))(300);
    const started = Date.now();
    const late = await refusal(streamClient.call(allocate("slow")));
    expect(late.code).toBe(status.DEADLINE_EXCEEDED);
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    streamClient.close();
  });

  it("fails the calls in flight when the server ends the stream, and opens a new one for the next call", async () => {
    let streams = 0;
    const streamClient = (await serve(
      async () => ({ $case: "releaseAddresses", value: {} }),
      (stream) => {
        streams++;
        // The first stream ends as soon as a call arrives; later ones answer.
        if (streams === 1) stream.once("data", () => stream.end());
        else serveCallStream<AddressCall, AddressCallResult>(async () => ({ $case: "releaseAddresses", value: {} }))(stream);
      },
    ))();
    const cut = await refusal(streamClient.call(allocate("first")));
    expect(cut.code).toBe(status.UNAVAILABLE);
    expect((await streamClient.call(allocate("second"))).$case).toBe("releaseAddresses");
    expect(streams).toBe(2);
    streamClient.close();
  });
});
