/**
 * The CNI spec's error codes (SPEC.md, "Error codes"): 1-99 are the spec's own, 100 and up the plugin's.
 * A plugin that fails prints `{cniVersion, code, msg, details}` on stdout and exits non-zero.
 */
export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  notAvailable: 50,
  /** Trellis's own: the planner refused the attach (name in use, address taken, ...). */
  refused: 100,
  /** The host's agent could not make the interface (it says why). */
  agentFailed: 101,
  /** The host's agent did not report the interface in time. */
  agentTimeout: 102,
  /** CHECK: the kernel differs from the result. */
  checkMismatch: 110,
  /** Anything else that went wrong inside the plugin. */
  internal: 199,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = "",
  ) {
    super(message);
    this.name = "CniError";
  }
}
