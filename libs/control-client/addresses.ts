/** Where the planner listens unless told otherwise. */
export const DEFAULT_PLANNER_ADDRESS = "127.0.0.1:7710";

/** "a:1, b:2" or ["a:1", "b:2"]: empty entries are dropped; none at all is a mistake worth saying. */
export function addressList(addresses: string | readonly string[]): string[] {
  const list = (typeof addresses === "string" ? addresses.split(",") : addresses).map((a) => a.trim()).filter((a) => a !== "");
  if (list.length === 0) throw new Error(`no planner address given ("${String(addresses)}"): set TRELLIS_PLANNER_ADDR to HOST:PORT[,HOST:PORT...]`);
  return list;
}
