import { Metadata, status, type ServiceError } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { addressList } from "../../libs/control-client/addresses.js";
import { ControlRefusedError, ControlTimeoutError, PlannerUnreachableError } from "../../libs/control-client/errors.js";
import { AddressRotation, withRetries, type RetryPolicy } from "../../libs/control-client/retry.js";
import { connectionFailure } from "../../libs/grpc/unreachable.js";

// The retry policy of libs/control-client, with attempts that fail as grpc-js fails them. The real calls,
// on real sockets against real planners, are in test/integration/control-failover.test.ts.

const serviceError = (code: status, details: string): ServiceError => Object.assign(new Error(details), { code, details, metadata: new Metadata() });
const refused = (address: string) => serviceError(status.UNAVAILABLE, `No connection established. Last error: Error: connect ECONNREFUSED ${address}. Resolution note: `);
const dropped = () => serviceError(status.UNAVAILABLE, "Connection dropped");

function policy(overrides: Partial<RetryPolicy> = {}): RetryPolicy {
  return { addresses: ["a:1", "b:2"], timeoutMs: 2_000, attemptTimeoutMs: 1_000, waitForPlanner: false, ...overrides };
}

/** An attempt function that answers from `outcomes` in turn, recording which address each attempt went to. */
function scripted(p: RetryPolicy, outcomes: (string | ServiceError)[]) {
  const tried: string[] = [];
  const attempt = async (index: number) => {
    tried.push(p.addresses[index]!);
    const outcome = outcomes.shift();
    if (outcome === undefined) throw new Error("more attempts than scripted");
    if (typeof outcome !== "string") throw outcome;
    return outcome;
  };
  return { tried, attempt };
}

describe("withRetries", () => {
  it("moves to the next address on 'try again' and returns the first answer, starting there next time", async () => {
    const p = policy();
    const rotation = new AddressRotation(p.addresses);
    const first = scripted(p, [refused("a:1"), "answer"]);
    expect(await withRetries(p, rotation, first.attempt)).toBe("answer");
    expect(first.tried).toEqual(["a:1", "b:2"]);
    const second = scripted(p, ["again"]);
    expect(await withRetries(p, rotation, second.attempt)).toBe("again");
    expect(second.tried).toEqual(["b:2"]);
  });

  it.each([status.UNAVAILABLE, status.DEADLINE_EXCEEDED, status.ABORTED])("retries status %s", async (code) => {
    const p = policy();
    const { tried, attempt } = scripted(p, [serviceError(code, "not now"), serviceError(code, "not now"), "answer"]);
    expect(await withRetries(p, new AddressRotation(p.addresses), attempt)).toBe("answer");
    expect(tried).toEqual(["a:1", "b:2", "a:1"]);
  });

  it("throws a refusal at once, as ControlRefusedError with the planner's code and details", async () => {
    const p = policy();
    const { tried, attempt } = scripted(p, [serviceError(status.ALREADY_EXISTS, "network with name n already exists")]);
    await expect(withRetries(p, new AddressRotation(p.addresses), attempt)).rejects.toEqual(
      expect.objectContaining({ constructor: ControlRefusedError, code: status.ALREADY_EXISTS, details: "network with name n already exists" }),
    );
    expect(tried).toEqual(["a:1"]);
  });

  it("gives up after one round when every address refuses the connection, naming each", async () => {
    const p = policy();
    const { tried, attempt } = scripted(p, [refused("a:1"), serviceError(status.UNAVAILABLE, "Name resolution failed for target dns:b:2")]);
    const error = await withRetries(p, new AddressRotation(p.addresses), attempt).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(PlannerUnreachableError);
    expect((error as Error).message).toBe(
      "failed to reach the planner at a:1 (connection refused), b:2 (no such host); start it (trellis planner), or set TRELLIS_PLANNER_ADDR to where it runs",
    );
    expect(tried).toEqual(["a:1", "b:2"]);
  });

  it("keeps trying after a first round that was not all refusals: a planner that was there is coming back", async () => {
    const p = policy();
    const { attempt } = scripted(p, [dropped(), refused("b:2"), refused("a:1"), "answer"]);
    expect(await withRetries(p, new AddressRotation(p.addresses), attempt)).toBe("answer");
  });

  it("with waitForPlanner, retries refusals until the deadline, then says which addresses it could not reach", async () => {
    const p = policy({ timeoutMs: 300, waitForPlanner: true });
    const retries: string[] = [];
    const attempt = async (index: number) => {
      throw refused(p.addresses[index]!);
    };
    const started = Date.now();
    const error = await withRetries({ ...p, onRetry: ({ reason }) => retries.push(reason) }, new AddressRotation(p.addresses), attempt).catch((e: unknown) => e);
    expect(Date.now() - started).toBeGreaterThanOrEqual(280);
    expect(error).toBeInstanceOf(ControlTimeoutError);
    expect((error as Error).message).toBe(
      "gave up after 0.3 s of retries: failed to reach the planner at a:1, b:2: connection refused; start it (trellis planner), or set TRELLIS_PLANNER_ADDR to where it runs",
    );
    // Not told of the move to the second address of the first round: that is failover as it should be.
    expect(retries[0]).toBe("failed to reach the planner at b:2: connection refused; start it (trellis planner), or set TRELLIS_PLANNER_ADDR to where it runs");
  });
});

describe("connectionFailure", () => {
  it.each([
    ["No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:7710. Resolution note: ", "connection refused"],
    ["Name resolution failed for target dns:nosuchhost.invalid:7710", "no such host"],
    ["No connection established. Last error: Error: connect EHOSTUNREACH 10.0.0.9:7710", "host unreachable"],
    ["Connection dropped", undefined],
  ])("%s: %s", (details, failure) => {
    expect(connectionFailure(serviceError(status.UNAVAILABLE, details))).toBe(failure);
  });

  it("is undefined for a server's own UNAVAILABLE, or any other status", () => {
    expect(connectionFailure(serviceError(status.UNAVAILABLE, "failed to reach IPAM at 127.0.0.1:7711: connection refused"))).toBeUndefined();
    expect(connectionFailure(serviceError(status.INTERNAL, "No connection established. Last error: Error: connect ECONNREFUSED"))).toBeUndefined();
  });
});

describe("addressList", () => {
  it("takes a comma-separated list or an array, dropping blanks, and refuses none at all", () => {
    expect(addressList(" a:1, b:2 ,")).toEqual(["a:1", "b:2"]);
    expect(addressList(["a:1", ""])).toEqual(["a:1"]);
    expect(() => addressList(" , ")).toThrow('no planner address given (" , "): set TRELLIS_PLANNER_ADDR to HOST:PORT[,HOST:PORT...]');
  });
});
