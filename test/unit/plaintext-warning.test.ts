import { describe, expect, it } from "vitest";
import { plaintextWarning } from "../../libs/grpc/serve.js";

describe("a gRPC server without TLS", () => {
  it("says nothing on loopback, where the lab and one machine run", () => {
    for (const listen of ["127.0.0.1:7710", "127.0.0.53:0", "localhost:7710", "[::1]:7711"]) expect(plaintextWarning("trellis.v1.Control", listen, false)).toBeUndefined();
  });

  it("warns on any other address, saying what to give it", () => {
    for (const listen of ["0.0.0.0:7710", "[::]:7710", "192.168.1.10:7711", "planner.example.org:7710"]) {
      expect(plaintextWarning("trellis.v1.Control", listen, false)).toBe(
        `Warning: trellis.v1.Control listens on ${listen} without TLS: anyone who reaches it may call it, in the clear; ` +
          "give it --tls-ca, --tls-cert and --tls-key (or TRELLIS_TLS_CA, TRELLIS_TLS_CERT and TRELLIS_TLS_KEY)",
      );
    }
  });

  it("says nothing with TLS, wherever it listens", () => {
    expect(plaintextWarning("trellis.v1.Ipam", "0.0.0.0:7711", true)).toBeUndefined();
  });
});
