import assert from "node:assert/strict";
import { test } from "node:test";
import { FrameDecoder, FrameError, encodeFrame } from "../src/framing.js";

test("frames round-trip whole, split at every byte, and back to back", () => {
  const messages = [{ a: 1 }, { text: "héllo ✓" }, [1, 2, 3]];
  const wire = Buffer.concat(messages.map(encodeFrame));
  assert.deepEqual(new FrameDecoder().push(wire), messages);
  const d = new FrameDecoder();
  const out: unknown[] = [];
  for (let i = 0; i < wire.length; i++) out.push(...d.push(wire.subarray(i, i + 1)));
  assert.deepEqual(out, messages);
});

test("oversize and non-JSON frames are errors", () => {
  const big = Buffer.alloc(4);
  big.writeUInt32BE(1025, 0);
  assert.throws(() => new FrameDecoder(1024).push(big), FrameError);
  const bad = Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from("{x")]);
  assert.throws(() => new FrameDecoder().push(bad), /not valid JSON/);
});
