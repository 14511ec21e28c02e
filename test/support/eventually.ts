/**
 * Polls `read` until `ok` holds for what it returns (a read that throws counts as "not yet"), and answers that
 * value; after `timeoutMs` it fails with what it was waiting for and the last value or error seen.
 */
export async function eventually<T>(
  what: string,
  read: () => T | Promise<T>,
  ok: (value: T) => boolean = () => true,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let last: string;
    try {
      const value = await read();
      if (ok(value)) return value;
      last = `last value: ${JSON.stringify(value)}`;
    } catch (error) {
      last = `last error: ${(error as Error).message}`;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (${last})`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
