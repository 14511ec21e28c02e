/** The cpio "newc" format the kernel unpacks as an initramfs; just the entry kinds an initramfs needs. */
export type ArchiveEntry =
  | { kind: "dir"; path: string }
  | { kind: "file"; path: string; data: Buffer; mode: number }
  | { kind: "symlink"; path: string; target: string };

const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

export function newcArchive(entries: ArchiveEntry[]): Buffer {
  const parts = entries.map((entry, index) => {
    const [mode, data] = modeAndData(entry);
    return record(entry.path, index + 1, mode, data);
  });
  parts.push(record("TRAILER!!!", 0, 0, Buffer.alloc(0)));
  return Buffer.concat(parts);
}

function modeAndData(entry: ArchiveEntry): [number, Buffer] {
  switch (entry.kind) {
    case "dir":
      return [S_IFDIR | 0o755, Buffer.alloc(0)];
    case "file":
      return [S_IFREG | entry.mode, entry.data];
    case "symlink":
      return [S_IFLNK | 0o777, Buffer.from(entry.target)];
  }
}

function record(name: string, inode: number, mode: number, data: Buffer): Buffer {
  const nameBytes = Buffer.from(`${name}\0`);
  const fields = [inode, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, nameBytes.length, 0];
  const header = Buffer.from(`070701${fields.map((field) => field.toString(16).padStart(8, "0")).join("")}`);
  return Buffer.concat([header, nameBytes, padding(header.length + nameBytes.length), data, padding(data.length)]);
}

/** newc aligns both the header+name and the data to four bytes. */
function padding(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4);
}
