import { execFileSync } from "node:child_process";
import { randomBytes, X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { isIP } from "node:net";
import { join } from "node:path";
import { identityUri, NAME_PATTERN, type Identity, type Role } from "./identity.js";

// The cluster's certificate authority, a directory holding ca.crt and ca.key, and the certificates it issues
// (NAME.crt and NAME.key beside them). openssl does all the cryptography; this module only says what to make.

const KEY_ALGORITHM = ["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"];

/** What each role's certificate is for: the extended key usages TLS peers check. */
const EXTENDED_KEY_USAGE: Record<Role, string> = {
  operator: "clientAuth",
  controller: "clientAuth",
  reader: "clientAuth",
  // The planner serves the Control API and calls IPAM; IPAM serves and logs in to NATS; NATS routes connect both ways.
  planner: "serverAuth,clientAuth",
  ipam: "serverAuth,clientAuth",
  nats: "serverAuth,clientAuth",
  agent: "clientAuth",
};

/** Roles whose certificate a server presents: without a --san, it names itself by its name. */
const SERVER_ROLES: ReadonlySet<Role> = new Set(["planner", "ipam", "nats"]);

export interface AuthorityFiles {
  certificate: string;
  key: string;
}

export interface IssuedCertificate extends AuthorityFiles {
  identity: Identity;
  subjectAltNames: string[];
  validTo: Date;
}

export interface IssueRequest {
  identity: Identity;
  /** "IP:…", "DNS:…", or a bare address or name, which is taken as IP or DNS by its form. */
  sans: string[];
  days: number;
  /** Replace NAME.crt and NAME.key when they exist (a renewal); otherwise they are never overwritten. */
  replace: boolean;
}

export function authorityFiles(dir: string): AuthorityFiles {
  return { certificate: join(dir, "ca.crt"), key: join(dir, "ca.key") };
}

export function issuedFiles(dir: string, name: string): AuthorityFiles {
  return { certificate: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
}

/** Makes a new CA in `dir`; an existing one is never replaced, as every certificate it issued would stop being trusted. */
export function initAuthority(dir: string, days: number): AuthorityFiles & { validTo: Date } {
  const files = authorityFiles(dir);
  for (const file of [files.certificate, files.key]) {
    if (existsSync(file)) throw new Error(`failed to make a CA in ${dir}: ${file} already exists (remove ca.crt and ca.key to start over; every certificate the old CA issued then stops being trusted)`);
  }
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writePrivateKey(files.key);
  const certificate = openssl(
    ["req", "-x509", "-new", "-key", files.key, "-sha256", "-days", String(days), "-subj", "/O=Trellis/CN=Trellis CA", "-set_serial", serial(),
      "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0", "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    "make the CA certificate",
  );
  writeFileSync(files.certificate, certificate, { mode: 0o644 });
  return { ...files, validTo: new Date(new X509Certificate(certificate).validTo) };
}

/** Issues NAME.key and NAME.crt, signed by the CA in `dir`, for the identity and its role's key usages. */
export function issueCertificate(dir: string, request: IssueRequest): IssuedCertificate {
  const { identity } = request;
  const what = `issue a certificate for ${identity.name}`;
  if (!NAME_PATTERN.test(identity.name)) {
    throw new Error(`failed to ${what}: the name may hold only letters, digits, ".", "_" and "-" (at most 63, a letter or digit first), e.g. h1 or alice`);
  }
  if (identity.name === "ca") throw new Error(`failed to ${what}: "ca" is the name of the CA's own files in ${dir}: choose another name`);
  const ca = authorityFiles(dir);
  if (!existsSync(ca.certificate) || !existsSync(ca.key)) throw new Error(`failed to ${what}: there is no CA in ${dir} (${ca.certificate}): run "trellis certs init --dir=${dir}" first`);
  const files = issuedFiles(dir, identity.name);
  if (!request.replace) {
    for (const file of [files.certificate, files.key]) {
      if (existsSync(file)) throw new Error(`failed to ${what}: ${file} already exists (pass --force to renew it with a new key)`);
    }
  }
  const sans = subjectAltNames(identity, request.sans);
  // The new key stays beside the old one until its certificate is signed: a failed renewal leaves a working pair.
  const newKey = `${files.key}.new`;
  rmSync(newKey, { force: true });
  writePrivateKey(newKey);
  try {
    const signingRequest = openssl(
      ["req", "-new", "-key", newKey, "-subj", `/O=Trellis/OU=${identity.role}/CN=${identity.name}`,
        "-addext", "basicConstraints=critical,CA:FALSE",
        "-addext", "keyUsage=critical,digitalSignature",
        "-addext", `extendedKeyUsage=${EXTENDED_KEY_USAGE[identity.role]}`,
        "-addext", `subjectAltName=${sans.join(",")}`],
      `${what}: make its signing request`,
    );
    const certificate = openssl(
      ["x509", "-req", "-CA", ca.certificate, "-CAkey", ca.key, "-set_serial", serial(), "-days", String(request.days), "-sha256", "-copy_extensions", "copyall"],
      `${what}: sign it`,
      signingRequest,
    );
    renameSync(newKey, files.key);
    writeFileSync(files.certificate, certificate, { mode: 0o644 });
    return { ...files, identity, subjectAltNames: sans, validTo: new Date(new X509Certificate(certificate).validTo) };
  } finally {
    rmSync(newKey, { force: true });
  }
}
/** The identity URI first, then the names peers reach it by. */
function subjectAltNames(identity: Identity, given: string[]): string[] {
  const names = given.map(subjectAltName);
  if (names.length === 0 && SERVER_ROLES.has(identity.role)) names.push(`DNS:${identity.name}`);
  return [`URI:${identityUri(identity)}`, ...names];
}

function subjectAltName(san: string): string {
  const typed = /^(IP|DNS):(.*)$/.exec(san);
  const [kind, value] = typed ? [typed[1], typed[2]] : [isIP(san) ? "IP" : "DNS", san];
  if (kind === "IP" ? isIP(value) !== 0 : /^(\*\.)?[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(value)) return `${kind}:${value}`;
  throw new Error(`invalid --san "${san}": expected an IP address (192.168.1.10, fd00::10), a DNS name (planner.example.org), or either prefixed with IP: or DNS:`);
}

/** A new private key in a new file, mode 0600 from the start; openssl prints it to our pipe, never to a terminal. */
function writePrivateKey(file: string): void {
  const key = openssl(["genpkey", ...KEY_ALGORITHM], "make a private key");
  writeFileSync(file, key, { mode: 0o600, flag: "wx" });
}

/** A random positive 127-bit serial, so that no two certificates of the CA share one without a serial file. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] &= 0x7f;
  return `0x${bytes.toString("hex")}`;
}

function openssl(args: string[], what: string, input?: string): string {
  try {
    return execFileSync("openssl", args, { input, encoding: "utf8", stdio: ["pipe", "pipe", "pipe"] });
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & { stderr?: string };
    if (failure.code === "ENOENT") throw new Error(`failed to ${what}: openssl is not installed (apt-get install openssl)`);
    throw new Error(`failed to ${what}: openssl said: ${(failure.stderr ?? failure.message).trim()}`);
  }
}
