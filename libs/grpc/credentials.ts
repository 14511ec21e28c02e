import { ChannelCredentials, experimental, ServerCredentials } from "@grpc/grpc-js";
import type { LoadedTls } from "../tls/settings.js";

/** How often a server reads its certificate files again: a renewed certificate is served without a restart. */
const RELOAD_INTERVAL_MS = 60_000;

/**
 * A server's credentials: plaintext without TLS; with TLS, its certificate, and a client certificate asked for
 * and checked against the CA. A client without a valid one still connects, so that the call's authorisation
 * (authorise.ts) can refuse it with a status that says why, instead of a failed handshake that says nothing.
 */
export function serverCredentials(tls: LoadedTls | undefined): ServerCredentials {
  if (!tls) return ServerCredentials.createInsecure();
  if (!tls.own) throw new Error("failed to serve over TLS: a server needs its own certificate and key besides the CA (--tls-cert and --tls-key)");
  const files = new experimental.FileWatcherCertificateProvider({
    caCertificateFile: tls.files.ca,
    certificateFile: tls.files.cert,
    privateKeyFile: tls.files.key,
    refreshIntervalMs: RELOAD_INTERVAL_MS,
  });
  return experimental.createCertificateProviderServerCredentials(files, files, false);
}

/** A client's credentials: plaintext without TLS; with TLS, the server checked against the CA, and its own certificate shown. */
export function clientCredentials(tls: LoadedTls | undefined): ChannelCredentials {
  if (!tls) return ChannelCredentials.createInsecure();
  return ChannelCredentials.createSsl(tls.ca, tls.own?.key ?? null, tls.own?.cert ?? null);
}
