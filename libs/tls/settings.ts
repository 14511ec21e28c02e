import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { describeIdentity, identityOf, type Identity } from "./identity.js";

/** Where a process's TLS material is: the CA it trusts, and its own certificate and key (a client may have none). */
export interface TlsFiles {
  ca: string;
  cert?: string | undefined;
  key?: string | undefined;
}

/** The files read and checked: a certificate signed by the CA, with its key, valid now, with a Trellis identity. */
export interface LoadedTls {
  files: TlsFiles;
  ca: Buffer;
  own?: { cert: Buffer; key: Buffer; identity: Identity };
}

/** How close to its end a certificate is said to expire soon, at every start. */
export const EXPIRY_WARNING_DAYS = 30;
const DAY_MS = 24 * 3600_000;

export interface TlsSources {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

/**
 * The TLS files from flags, else from TRELLIS_TLS_CA, TRELLIS_TLS_CERT and TRELLIS_TLS_KEY; undefined when none is
 * set, which means plaintext. A certificate without its key, or either without a CA, is refused.
 */
export function tlsFilesFrom(flags: TlsSources): TlsFiles | undefined {
  const ca = flags.ca ?? (process.env.TRELLIS_TLS_CA || undefined);
  const cert = flags.cert ?? (process.env.TRELLIS_TLS_CERT || undefined);
  const key = flags.key ?? (process.env.TRELLIS_TLS_KEY || undefined);
  if (!ca && !cert && !key) return undefined;
  if (Boolean(cert) !== Boolean(key)) {
    throw new Error(`failed to set up TLS: ${cert ? `a certificate (${cert}) is given without its key` : `a key (${key}) is given without its certificate`}: give both TRELLIS_TLS_CERT and TRELLIS_TLS_KEY (or --tls-cert and --tls-key)`);
  }
  if (!ca) throw new Error("failed to set up TLS: a certificate is given without the CA to check peers against: set TRELLIS_TLS_CA (or --tls-ca) to the cluster's ca.crt");
  return { ca, cert, key };
}

/**
 * Reads and checks the files once, at start: an expired certificate, or one not yet valid, is refused; one that
 * expires within 30 days is warned about. What is refused here would otherwise fail every connection later.
 */
export function loadTls(files: TlsFiles, warn: (line: string) => void = (line) => console.error(line), now = new Date()): LoadedTls {
  const ca = readPem(files.ca, "CA certificate");
  const authority = parseCertificate(ca, files.ca, "CA certificate");
  checkValidity(authority, files.ca, "the cluster's CA", now, warn, "make a new CA with \"trellis certs init\" and issue every certificate again");
  if (!files.cert || !files.key) return { files, ca };
  const cert = readPem(files.cert, "certificate");
  const key = readPem(files.key, "private key");
  const certificate = parseCertificate(cert, files.cert, "certificate");
  const identity = identityOf(certificate);
  const fail = (why: string) => new Error(`failed to load TLS certificate ${files.cert}: ${why}`);
  if (!identity) throw fail(`it carries no Trellis identity (a URI SAN trellis://ROLE/NAME): issue one with "trellis certs issue NAME --role=ROLE"`);
  if (!certificate.checkIssued(authority) || !certificate.verify(authority.publicKey)) {
    throw fail(`it was not issued by the CA in ${files.ca} (${certificate.issuer.replaceAll("\n", ", ")}): use a certificate from that CA, or that CA's ca.crt`);
  }
  if (!certificate.checkPrivateKey(parseKey(key, files.key))) throw fail(`${files.key} is not its private key: give the key issued with it`);
  const renew = `issue a new one with "trellis certs issue ${identity.name} --role=${identity.role} --force"`;
  checkValidity(certificate, files.cert, describeIdentity(identity), now, warn, renew);
  warnIfReadableByOthers(files.key, warn);
  return { files, ca, own: { cert, key, identity } };
}

function checkValidity(certificate: X509Certificate, file: string, whose: string, now: Date, warn: (line: string) => void, remedy: string): void {
  const validFrom = new Date(certificate.validFrom);
  const validTo = new Date(certificate.validTo);
  const fail = (why: string) => new Error(`failed to load TLS certificate ${file} of ${whose}: ${why}; ${remedy}`);
  if (validTo <= now) throw fail(`it expired on ${validTo.toISOString()}`);
  if (validFrom > now) throw fail(`it is not valid before ${validFrom.toISOString()} (is this machine's clock right?)`);
  const daysLeft = Math.floor((validTo.getTime() - now.getTime()) / DAY_MS);
  if (daysLeft < EXPIRY_WARNING_DAYS) warn(`Warning: TLS certificate ${file} of ${whose} expires on ${validTo.toISOString()}, in ${daysLeft} day(s): ${remedy}`);
}

/** A group may read it (a Kubernetes Secret mounted for the pod's fsGroup, Debian's ssl-cert); anyone else may not. */
function warnIfReadableByOthers(file: string, warn: (line: string) => void): void {
  if ((statSync(file).mode & 0o007) !== 0) warn(`Warning: private key ${file} may be read by any user of this machine: chmod 600 ${file}`);
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    throw new Error(`failed to read the TLS ${what} ${file}: ${(error as Error).message}`);
  }
}

function parseCertificate(pem: Buffer, file: string, what: string): X509Certificate {
  try {
    return new X509Certificate(pem);
  } catch (error) {
    throw new Error(`failed to read the TLS ${what} ${file}: it is not a PEM certificate (${(error as Error).message})`);
  }
}

function parseKey(pem: Buffer, file: string) {
  try {
    return createPrivateKey(pem);
  } catch (error) {
    throw new Error(`failed to read the TLS private key ${file}: it is not a PEM private key (${(error as Error).message})`);
  }
}
