import { constants } from "node:os";
import { getSystemErrorMap } from "node:util";

/**
 * Every failure of this layer. `code` is the errno name (EEXIST, ENODEV, EOPNOTSUPP…) so callers can
 * branch on it — e.g. an "ensure" treats EEXIST as success — without parsing messages.
 */
export class NetlinkError extends Error {
  override readonly name = "NetlinkError";

  constructor(
    message: string,
    readonly code: string,
    readonly errno: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The kernel's answer, e.g. "file already exists", from libuv's table (Node has no strerror). */
function describeErrno(errno: number): string | undefined {
  return getSystemErrorMap().get(-errno)?.[1];
}

function errnoOf(code: string): number {
  return (constants.errno as Record<string, number>)[code] ?? 0;
}

// libuv names errno 95 ENOTSUP; the kernel (and every netlink caller) knows it as EOPNOTSUPP.
const KERNEL_NAMES: Record<string, string> = { ENOTSUP: "EOPNOTSUPP" };

/**
 * Extracts the errno name from whatever failed: the `netlink` package rejects with a plain
 * `Error("Request rejected: EEXIST")`, Node's fs calls carry `.code`.
 */
export function errnoCodeOf(cause: unknown): string | undefined {
  if (cause instanceof NetlinkError) return cause.code;
  const own = (cause as { code?: unknown } | undefined)?.code;
  const code =
    typeof own === "string" && /^E[A-Z0-9]+$/.test(own)
      ? own
      : /Request rejected: (E[A-Z0-9]+)/.exec(String((cause as Error | undefined)?.message ?? cause))?.[1];
  return code === undefined ? undefined : (KERNEL_NAMES[code] ?? code);
}

/** Builds "failed to <action>: <cause> (<ERRNO>)" with the errno name kept on the error. */
export function netlinkError(action: string, cause: unknown, hint?: string): NetlinkError {
  if (cause instanceof NetlinkError) return cause;
  const code = errnoCodeOf(cause);
  const errno = code ? errnoOf(code) : 0;
  const detail = hint ?? (code ? describeErrno(errno) : undefined) ?? String((cause as Error)?.message ?? cause);
  const message = code ? `failed to ${action}: ${detail} (${code})` : `failed to ${action}: ${detail}`;
  return new NetlinkError(message, code ?? "EUNKNOWN", errno, { cause });
}

/** An error found before talking to the kernel (bad CIDR, unknown mode…), shaped like a kernel EINVAL. */
export function invalidArgument(action: string, detail: string): NetlinkError {
  return new NetlinkError(`failed to ${action}: ${detail} (EINVAL)`, "EINVAL", constants.errno.EINVAL);
}

/** Runs a kernel request and rewrites its failure as a NetlinkError for `action`. */
export async function request<T>(action: string, run: () => Promise<T>, hints?: Partial<Record<string, string>>): Promise<T> {
  try {
    return await run();
  } catch (cause) {
    const code = errnoCodeOf(cause);
    throw netlinkError(action, cause, code ? hints?.[code] : undefined);
  }
}
