import { describe, expect, it } from "vitest";
import { agentCommand } from "../../services/cli/commands/services.js";

// `trellis agent --host-dns` is for dockerd's resolv.conf on this host: refused before the agent starts anything.
describe("trellis agent --host-dns", () => {
  it.each(["10.0.0.1", "127.0.0.11", "localhost", "127.0.0.1:53", "::1"])("refuses %j, saying what is valid", async (address) => {
    await expect(agentCommand([`--host-dns=${address}`, "--host=h1"])).rejects.toThrow(
      `invalid --host-dns "${address}": must be an IPv4 loopback address other than 127.0.0.11, such as 127.0.0.153`,
    );
  });
});
