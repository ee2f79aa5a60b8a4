/** Plain-text tables for the report: first column left-aligned, the others right-aligned. */

const MiB = 2 ** 20;

export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n');
}

export function mib(bytes: number | undefined): string {
  return bytes === undefined ? '-' : `${(bytes / MiB).toFixed(1)} MiB`;
}

/** MiB without the unit, for dense tables; '-' when unknown. */
export function mibNumber(bytes: number | undefined, digits = 0): string {
  return bytes === undefined || Number.isNaN(bytes) ? '-' : (bytes / MiB).toFixed(digits);
}

export function ms(x: number, digits = 2): string {
  return Number.isNaN(x) ? '-' : x.toFixed(digits);
}
