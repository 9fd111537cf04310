import { completeUtf8Length } from "./utf8.js";

/** Collects a stream's bytes up to a cap; what is past the cap is counted and dropped. */
export class CappedBuffer {
  private chunks: Buffer[] = [];
  private kept = 0;
  truncated = false;

  constructor(private readonly cap: number) {}

  push(chunk: Buffer): void {
    const room = this.cap - this.kept;
    if (room <= 0) {
      if (chunk.length > 0) this.truncated = true;
      return;
    }
    const part = chunk.length <= room ? chunk : chunk.subarray(0, room);
    if (part.length < chunk.length) this.truncated = true;
    this.chunks.push(part);
    this.kept += part.length;
  }

  /** Text of what was kept; a character cut by the cap is dropped rather than mangled. */
  text(): string {
    const all = Buffer.concat(this.chunks);
    return all.toString("utf8", 0, this.truncated ? completeUtf8Length(all) : all.length);
  }
}
