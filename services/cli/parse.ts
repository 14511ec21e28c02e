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

/** `-o key=value` pairs, as `docker network create` takes them. */
export function parseKeyValues(pairs: string[] | undefined, usage: string): Record<string, string> {
  const result: Record<string, string> = {};
  for (const pair of pairs ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new UsageError(`invalid option "${pair}": expected key=value, e.g. -o parent=eth0`, usage);
    result[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return result;
}
