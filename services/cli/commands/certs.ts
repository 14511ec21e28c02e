import { initAuthority, issueCertificate } from "../../../libs/tls/authority.js";
import { isRole, ROLES } from "../../../libs/tls/identity.js";
import { parseCommand, UsageError } from "../parse.js";

const USAGE = `Usage: trellis certs init [--dir=DIR] [--days=N]
       trellis certs issue NAME --role=${ROLES.join("|")} [--san=IP|DNS-NAME]... [--dir=DIR] [--days=N] [--force]

DIR defaults to TRELLIS_CERTS_DIR, else /etc/trellis/tls. An agent's NAME is its host's name.`;

const DEFAULT_DIR = "/etc/trellis/tls";
const CA_DAYS = 3650;
const CERTIFICATE_DAYS = 365;

/** `trellis certs init|issue`: the cluster's CA, and a key and certificate per service, host and person. */
export async function certsCommand(argv: string[]): Promise<number> {
  const { values, positionals } = parseCommand(
    argv,
    { dir: { type: "string" }, days: { type: "string" }, role: { type: "string" }, san: { type: "string", multiple: true }, force: { type: "boolean" } },
    USAGE,
  );
  const [action, name, ...extra] = positionals;
  const dir = values.dir ?? (process.env.TRELLIS_CERTS_DIR || DEFAULT_DIR);
  if (action === "init" && name === undefined) {
    if (values.role || values.san || values.force) throw new UsageError("certs init takes only --dir and --days", USAGE);
    const ca = initAuthority(dir, days(values.days, CA_DAYS));
    console.log(`made the CA: ${ca.certificate}, valid until ${ca.validTo.toISOString()}`);
    console.log(`its key is ${ca.key} (mode 0600): keep it where certificates are issued, not on the cluster's hosts`);
    return 0;
  }
  if (action === "issue" && name !== undefined && extra.length === 0) {
    const role = values.role;
    if (!role || !isRole(role)) throw new UsageError(`${role ? `invalid --role "${role}"` : "--role is missing"}: expected one of ${ROLES.join(", ")}`, USAGE);
    const issued = issueCertificate(dir, { identity: { role, name }, sans: values.san ?? [], days: days(values.days, CERTIFICATE_DAYS), replace: values.force ?? false });
    console.log(`issued ${issued.certificate} for ${issued.subjectAltNames.join(", ")}, valid until ${issued.validTo.toISOString()}`);
    console.log(`its key is ${issued.key} (mode 0600)`);
    return 0;
  }
  throw new UsageError("expected: certs init, or certs issue NAME --role=ROLE", USAGE);
}

function days(text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 36500) throw new UsageError(`invalid --days "${text}": expected a whole number of days from 1, e.g. 365`, USAGE);
  return Number(text);
}
