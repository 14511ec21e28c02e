/** Columns padded to their widest cell, as `docker ps` prints them. */
export function printTable(headers: string[], rows: string[][]): void {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)));
  for (const row of [headers, ...rows]) {
    console.log(row.map((cell, column) => cell.padEnd(widths[column]!)).join("   ").trimEnd());
  }
}
