/**
 * A one-line progress bar on stderr for long transfers, redrawn at most ten
 * times a second. Silent when stderr is not a terminal (scripts, CI) or with
 * --json, so output stays clean to parse.
 */
const WIDTH = 24;

export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export class ProgressBar {
  private readonly started = performance.now();
  private last = 0;
  private bytes = 0;
  private readonly enabled: boolean;

  constructor(
    private readonly label: string,
    private total: number | undefined,
    enabled = process.stderr.isTTY === true,
  ) {
    this.enabled = enabled;
  }

  update(bytes: number, total?: number): void {
    this.bytes = bytes;
    if (total !== undefined) this.total = total;
    const now = performance.now();
    if (!this.enabled || now - this.last < 100) return;
    this.last = now;
    this.draw();
  }

  private draw(): void {
    const seconds = (performance.now() - this.started) / 1000;
    const rate = seconds > 0 ? `${formatBytes(this.bytes / seconds)}/s` : "";
    let bar = "";
    if (this.total && this.total > 0) {
      const frac = Math.min(1, this.bytes / this.total);
      const filled = Math.round(frac * WIDTH);
      bar = `[${"=".repeat(filled)}${filled < WIDTH ? ">" : ""}${" ".repeat(Math.max(0, WIDTH - filled - 1))}] ${String(Math.floor(frac * 100)).padStart(3)}% ${formatBytes(this.bytes)}/${formatBytes(this.total)}`;
    } else {
      bar = formatBytes(this.bytes);
    }
    process.stderr.write(`\r\x1b[K${this.label} ${bar} ${rate}`);
  }

  done(): void {
    if (!this.enabled) return;
    this.draw();
    process.stderr.write("\n");
  }
}
