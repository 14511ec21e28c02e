import { parseArgs, type ParseArgsConfig } from "node:util";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** A mistake in how a command was called: printed with the command's usage, exit status 2. */
export class UsageError extends Error {
  constructor(message: string, readonly usage: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** util.parseArgs with errors that name the command and list the flags it does take. */
export function parseCommand<T extends Options>(argv: string[], options: T, usage: string) {
  try {
    return parseArgs({ args: argv, options, allowPositionals: true, strict: true });
  } catch (error) {
    const flags = Object.entries(options)
      .map(([name, option]) => (option.short ? `-${option.short}/--${name}` : `--${name}`))
      .join(", ");
    throw new UsageError(`${(error as Error).message.replace(/\. To specify a positional.*$/s, "")}; valid flags: ${flags}`, usage);
  }
}

/**
 * `key=value` pairs of a repeated flag, as `docker network create` takes `-o` and `--aux-address`.
 * A key given twice is refused: docker silently keeps the last one.
 */
export function parseKeyValues(pairs: string[] | undefined, flag: { what: string; example: string }, usage: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`invalid ${flag.what} "${pair}": expected key=value, e.g. ${flag.example}`, usage);
    const key = pair.slice(0, eq);
    if (key in result) throw new UsageError(`${flag.what} ${key} is given twice (${key}=${result[key]} and ${pair}): give it once`, usage);
    result[key] = pair.slice(eq + 1);
  }
  return result;
}
