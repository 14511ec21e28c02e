// Apart from the credentials (credentials.ts): every command calls it, and importing grpc-js for it would make an
// agent, which speaks no gRPC, load and keep the whole library.

/**
 * grpc-js sends a server's address as the TLS server name even when it is an IP address, which Node deprecates
 * (DEP0123) and says on stderr, once per process, to every user of the CLI. The address is still checked against
 * the certificate's IP SANs; only the server name indication is lost, which a Trellis server does not use.
 */
export function silenceIpServerNameWarning(): void {
  const emitWarning = process.emitWarning.bind(process);
  process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
    if (rest[1] === "DEP0123") return;
    (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
  }) as typeof process.emitWarning;
}
