import type { X509Certificate } from "node:crypto";

/**
 * Who a certificate speaks for. The identity is the certificate's URI SAN `trellis://ROLE/NAME`, which only the
 * cluster's CA can put there; the subject (O=Trellis, OU=ROLE, CN=NAME) says the same for people reading it.
 */
export const ROLES = ["operator", "controller", "reader", "planner", "ipam", "agent", "nats"] as const;
export type Role = (typeof ROLES)[number];

export interface Identity {
  role: Role;
  /** A person's or program's name; for an agent, the host it runs on. */
  name: string;
}

const IDENTITY_URI = /(?:^|,\s*)URI:trellis:\/\/([a-z]+)\/([A-Za-z0-9][A-Za-z0-9._-]*)(?=,|$)/;

/** Names as they may appear in a certificate, a file name and a URI alike. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export function isRole(text: string): text is Role {
  return (ROLES as readonly string[]).includes(text);
}

export function identityUri(identity: Identity): string {
  return `trellis://${identity.role}/${identity.name}`;
}

/**
 * The identity in a certificate's subjectAltName, as node:tls and node:crypto print it
 * ("DNS:h1, URI:trellis://agent/h1"); undefined when it carries none or an unknown role.
 */
export function identityFromSubjectAltName(subjectAltName: string | undefined): Identity | undefined {
  const match = IDENTITY_URI.exec(subjectAltName ?? "");
  if (!match || !isRole(match[1])) return undefined;
  return { role: match[1], name: match[2] };
}

export function identityOf(certificate: X509Certificate): Identity | undefined {
  return identityFromSubjectAltName(certificate.subjectAltName);
}

/** `operator "alice"`: how messages name who asked. */
export function describeIdentity(identity: Identity): string {
  return `${identity.role} "${identity.name}"`;
}
