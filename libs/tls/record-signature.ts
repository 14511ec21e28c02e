import { createPrivateKey, sign, verify, X509Certificate, type KeyObject } from "node:crypto";
import type { MessageCodec } from "../bus/codec.js";
import type { RecordSignature } from "../proto/gen/trellis/v1/signature.js";
import { describeIdentity, identityOf, type Identity } from "./identity.js";
import type { LoadedTls } from "./settings.js";

// What a host publishes about itself (its heartbeat, its route announcement) is signed with its agent's key, so
// that another host, which the NATS server lets store bytes under any key, cannot speak for it: a reader with the
// CA believes a record only if the CA issued its certificate to the agent of the host the record names. What the
// planner writes for the agents (networks, desired endpoints, names) is signed with a planner's key, so that no
// host can tell another what to build; and IPAM's block records, which say what each host may announce, with
// IPAM's key.

/** A record that carries its writer's signature over its encoding without it. */
export interface Signed {
  signature?: RecordSignature | undefined;
}

/** The writers whose records are signed, and how each one's certificate is issued. */
const SIGNING_ROLES = {
  agent: { what: "a host's agent", issue: "trellis certs issue HOST --role=agent" },
  planner: { what: "a planner", issue: "trellis certs issue NAME --role=planner" },
  ipam: { what: "an IPAM replica", issue: "trellis certs issue NAME --role=ipam" },
} as const;

/** The services whose replicas sign what they write for the agents: the planner (desired state), IPAM (blocks). */
export type SigningService = Exclude<keyof typeof SIGNING_ROLES, "agent">;

/** Signs records as the certificate's holder: a host's agent, a planner or IPAM. */
export class RecordSigner {
  private readonly key: KeyObject;
  private readonly certificate: Uint8Array;
  readonly identity: Identity;

  constructor(tls: LoadedTls, role: keyof typeof SIGNING_ROLES = "agent") {
    if (!tls.own || tls.own.identity.role !== role) {
      const { what, issue } = SIGNING_ROLES[role];
      throw new Error(`failed to sign records: ${tls.own ? `the certificate ${tls.files.cert} is of ${describeIdentity(tls.own.identity)}, not ${what}` : "no certificate"} (issue one with "${issue}")`);
    }
    this.key = createPrivateKey(tls.own.key);
    this.certificate = new Uint8Array(new X509Certificate(tls.own.cert).raw);
    this.identity = tls.own.identity;
  }

  sign<T extends Signed>(codec: MessageCodec<T>, record: T): T {
    const signature = sign("sha256", codec.encode({ ...record, signature: undefined }), this.key);
    return { ...record, signature: { certificate: this.certificate, signature: new Uint8Array(signature) } };
  }
}

/** A certificate as checked once: its identity, or why it is not to be believed; and until when. */
interface CheckedCertificate {
  /** Taken once: X509Certificate.publicKey makes a new key object on every read. */
  publicKey?: KeyObject;
  identity?: Identity;
  problem?: string;
  validTo: number;
}

/** Enough for every host's agent, and more than a flood of forged certificates could make it hold. */
const MAX_CACHED_CERTIFICATES = 10_000;

/** Checks records against the cluster's CA; each record's certificate chain is checked once, not per record. */
export class RecordVerifier {
  private readonly authority: X509Certificate;
  private readonly checked = new Map<string, CheckedCertificate>();

  constructor(ca: Buffer) {
    this.authority = new X509Certificate(ca);
  }

  /** Why the record must not be believed as written by `host`'s agent; undefined when it may be. */
  problem<T extends Signed>(codec: MessageCodec<T>, record: T, host: string, now = Date.now()): string | undefined {
    return this.problemOf(codec, record, (identity) => identity.role === "agent" && identity.name === host, `the agent of host ${host}`, now);
  }

  /** Why the record must not be believed as written by `service` (any replica); undefined when it may be. */
  serviceProblem<T extends Signed>(codec: MessageCodec<T>, record: T, service: SigningService, now = Date.now()): string | undefined {
    return this.problemOf(codec, record, (identity) => identity.role === service, SIGNING_ROLES[service].what, now);
  }

  private problemOf<T extends Signed>(codec: MessageCodec<T>, record: T, rightful: (identity: Identity) => boolean, writer: string, now: number): string | undefined {
    const { signature } = record;
    if (!signature || signature.certificate.length === 0) return "it is not signed";
    const checked = this.check(signature.certificate);
    if (checked.problem) return checked.problem;
    if (checked.validTo <= now) return `its certificate (${describeIdentity(checked.identity!)}) expired on ${new Date(checked.validTo).toISOString()}`;
    const { identity } = checked;
    if (!rightful(identity!)) return `it is signed by ${describeIdentity(identity!)}, not by ${writer}`;
    const bytes = codec.encode({ ...record, signature: undefined });
    if (!verify("sha256", bytes, checked.publicKey!, signature.signature)) return `its signature does not match it (signed by ${describeIdentity(identity!)})`;
    return undefined;
  }

  private check(der: Uint8Array): CheckedCertificate {
    const id = Buffer.from(der).toString("base64");
    let checked = this.checked.get(id);
    if (!checked) {
      checked = this.checkChain(der);
      if (this.checked.size >= MAX_CACHED_CERTIFICATES) this.checked.clear();
      this.checked.set(id, checked);
    }
    return checked;
  }

  private checkChain(der: Uint8Array): CheckedCertificate {
    let certificate: X509Certificate;
    try {
      certificate = new X509Certificate(der);
    } catch {
      return { problem: "its certificate is not one", validTo: 0 };
    }
    const validTo = Date.parse(certificate.validTo);
    if (!certificate.checkIssued(this.authority) || !certificate.verify(this.authority.publicKey)) {
      return { problem: `its certificate (${certificate.subject.replaceAll("\n", ", ")}) was not issued by the cluster's CA`, validTo };
    }
    const identity = identityOf(certificate);
    if (!identity) return { problem: "its certificate carries no Trellis identity", validTo };
    return { publicKey: certificate.publicKey, identity, validTo };
  }
}

/** An agent's keys to its own records: it signs what it publishes, and checks what others publish. */
export interface RecordTrust {
  signer?: RecordSigner | undefined;
  verifier?: RecordVerifier | undefined;
}

/**
 * How readers drop what they may not believe: each (record, reason) is logged once, so that a forger cannot fill
 * the log and an operator still learns of it.
 */
export class DroppedRecords {
  private readonly logged = new Set<string>();

  constructor(private readonly log: (line: string) => void) {}

  /** `record` says which: "heartbeat of host h2", "network under key n1 of trellis-networks". */
  drop(record: string, problem: string): void {
    const line = `dropped the ${record}: ${problem}`;
    if (this.logged.has(line)) return;
    if (this.logged.size >= MAX_CACHED_CERTIFICATES) this.logged.clear();
    this.logged.add(line);
    this.log(line);
  }
}
