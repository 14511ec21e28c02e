import { execFileSync } from "node:child_process";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { issuedFiles } from "../../libs/tls/authority.js";
import type { Role } from "../../libs/tls/identity.js";
import { loadTls, type LoadedTls } from "../../libs/tls/settings.js";
import { runTrellis } from "./trellis-cli.js";

/** A CA made by the built `trellis certs`, in a fresh temporary directory, and certificates it issues. */
export interface TestAuthority {
  dir: string;
  ca: string;
  /** `trellis certs issue NAME --role=ROLE [--san=…]…`; fails the test when the command fails. */
  issue(name: string, role: Role, ...sans: string[]): Promise<{ cert: string; key: string }>;
  /** The TLS settings of an issued certificate, as a service loads them at start. */
  tls(name: string): LoadedTls;
  /** The environment a Trellis process needs to present NAME's certificate. */
  environment(name: string): Record<string, string>;
}

export async function makeAuthority(label: string): Promise<TestAuthority> {
  const dir = mkdtempSync(join(tmpdir(), `trellis-${label}-`));
  await trellisCerts("init", `--dir=${dir}`);
  const ca = join(dir, "ca.crt");
  return {
    dir,
    ca,
    async issue(name, role, ...sans) {
      await trellisCerts("issue", name, `--role=${role}`, `--dir=${dir}`, ...sans.map((san) => `--san=${san}`));
      const files = issuedFiles(dir, name);
      return { cert: files.certificate, key: files.key };
    },
    tls(name) {
      const files = issuedFiles(dir, name);
      return loadTls({ ca, cert: files.certificate, key: files.key }, () => undefined);
    },
    environment(name) {
      const files = issuedFiles(dir, name);
      return { TRELLIS_TLS_CA: ca, TRELLIS_TLS_CERT: files.certificate, TRELLIS_TLS_KEY: files.key };
    },
  };
}

async function trellisCerts(...args: string[]): Promise<void> {
  const result = await runTrellis({}, "certs", ...args);
  if (result.code !== 0) throw new Error(`trellis certs ${args.join(" ")} failed (${result.code}): ${result.stderr}`);
}

/**
 * A certificate of the authority valid only in January 2020, for a client that must be refused. `trellis certs`
 * cannot backdate, and openssl 3.0's x509 neither, so this signs with `openssl ca`, which takes start and end dates.
 */
export function expiredCertificate(authority: TestAuthority, name: string, role: Role): { cert: string; key: string } {
  const work = mkdtempSync(join(authority.dir, "expired-"));
  const config = join(work, "ca.conf");
  writeFileSync(join(work, "index.txt"), "");
  writeFileSync(
    config,
    [
      "[ca]", "default_ca = expired",
      "[expired]", `database = ${work}/index.txt`, `new_certs_dir = ${work}`, `serial = ${work}/serial`, "rand_serial = yes",
      "default_md = sha256", "policy = any", "copy_extensions = copyall", "unique_subject = no",
      "[any]", "organizationName = optional", "organizationalUnitName = optional", "commonName = supplied",
    ].join("\n"),
  );
  const key = join(work, `${name}.key`);
  const csr = join(work, `${name}.csr`);
  const cert = join(work, `${name}.crt`);
  execFileSync("openssl", ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
    "-subj", `/O=Trellis/OU=${role}/CN=${name}`, "-addext", `subjectAltName=URI:trellis://${role}/${name}`, "-addext", "extendedKeyUsage=clientAuth"], { stdio: "pipe" });
  execFileSync("openssl", ["ca", "-batch", "-notext", "-config", config, "-cert", authority.ca, "-keyfile", join(authority.dir, "ca.key"),
    "-in", csr, "-out", cert, "-startdate", "20200101000000Z", "-enddate", "20200131000000Z"], { stdio: "pipe" });
  return { cert, key };
}
