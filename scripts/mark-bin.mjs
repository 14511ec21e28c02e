// tsc does not set the executable bit; `npx trellis` and the lab's wrapper need it on the CLI entry.
import { chmodSync } from "node:fs";

chmodSync(new URL("../dist/bundle/trellis.js", import.meta.url), 0o755);
