/** The API key: created on first start, kept in the data dir with mode 0600. */
import { randomBytes, timingSafeEqual } from "node:crypto";
import { chmodSync, existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

export const API_KEY_FILE = "api-key";

export function loadOrCreateApiKey(dataDir: string, fixed?: string): { key: string; file: string } {
  const file = join(dataDir, API_KEY_FILE);
  if (fixed) {
    writeFileSync(file, `${fixed}\n`, { mode: 0o600 });
    chmodSync(file, 0o600);
    return { key: fixed, file };
  }
  if (existsSync(file)) {
    const key = readFileSync(file, "utf8").trim();
    if (key) {
      chmodSync(file, 0o600);
      return { key, file };
    }
  }
  const key = `ab_${randomBytes(24).toString("base64url")}`;
  writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return { key, file };
}

/** Constant-time comparison, so the key cannot be guessed byte by byte from timings. */
export function keyMatches(expected: string, given: string | undefined): boolean {
  if (given === undefined) return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(given);
  return a.length === b.length && timingSafeEqual(a, b);
}
