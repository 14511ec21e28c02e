import { ServerInterceptingCall, status, type ServerInterceptor, type ServiceDefinition, type StatusObject } from "@grpc/grpc-js";
import type { PeerCertificate } from "node:tls";
import { describeIdentity, identityFromSubjectAltName, type Identity, type Role } from "../tls/identity.js";

/** Which roles may call each method of a service: every method is named, so a new one cannot be forgotten. */
export interface AccessPolicy {
  service: ServiceDefinition;
  roles: Readonly<Record<string, readonly Role[]>>;
}

export function accessPolicy<S extends ServiceDefinition>(service: S, roles: { readonly [method in keyof S]: readonly Role[] }): AccessPolicy {
  return { service, roles };
}

interface Rule {
  /** "trellis.v1.Control" */
  service: string;
  /** "CreateNetwork" */
  method: string;
  roles: readonly Role[];
}

/**
 * Authorises each call by the identity in the client's certificate, before its handler runs: a call without a
 * certificate the CA vouches for is UNAUTHENTICATED, one whose role may not call the method is PERMISSION_DENIED,
 * each with a message that names the identity and what it lacks. Methods of services without a policy (the
 * health service, which probes call) are open.
 */
export function authorisation(policies: AccessPolicy[]): ServerInterceptor {
  const rules = new Map<string, Rule>();
  for (const { service, roles } of policies) {
    for (const [key, method] of Object.entries(service)) {
      const [serviceName, methodName] = method.path.slice(1).split("/");
      rules.set(method.path, { service: serviceName, method: methodName, roles: roles[key] ?? [] });
    }
  }
  return (descriptor, call) => {
    const rule = rules.get(descriptor.path);
    if (!rule) return new ServerInterceptingCall(call);
    return new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, passOn) => {
            const refused = refusal(rule, call.getAuthContext().sslPeerCertificate);
            if (refused) call.sendStatus(refused);
            else passOn(metadata);
          },
        }),
    });
  };
}

/** Why the caller may not make this call, or undefined when it may. */
function refusal(rule: Rule, peer: PeerCertificate | undefined): Pick<StatusObject, "code" | "details"> | undefined {
  const call = `${rule.method} on ${rule.service}`;
  if (!peer) {
    return {
      code: status.UNAUTHENTICATED,
      details:
        `${call} needs a client certificate from the cluster's CA, and the caller presented none the CA vouches for ` +
        `(none, another CA's, or an expired one): set TRELLIS_TLS_CERT and TRELLIS_TLS_KEY to one from "trellis certs issue"`,
    };
  }
  const identity = identityFromSubjectAltName(peer.subjectaltname);
  if (!identity) {
    return {
      code: status.UNAUTHENTICATED,
      details: `the client certificate of ${peer.subject?.CN ?? "no name"} carries no Trellis identity (a URI SAN trellis://ROLE/NAME), so ${call} is refused: issue one with "trellis certs issue"`,
    };
  }
  if (rule.roles.includes(identity.role)) return undefined;
  return {
    code: status.PERMISSION_DENIED,
    details: `${describeIdentity(identity)} may not call ${call}: that takes the role ${rule.roles.join(" or ") || "of no one"}`,
  };
}

/** The Trellis identity of the caller's certificate, which the CA vouched for in the handshake; undefined without TLS. */
export function callerIdentity(call: { getAuthContext(): { sslPeerCertificate?: PeerCertificate } }): Identity | undefined {
  const peer = call.getAuthContext().sslPeerCertificate;
  return peer ? identityFromSubjectAltName(peer.subjectaltname) : undefined;
}
