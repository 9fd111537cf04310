import assert from "node:assert/strict";
import { test } from "node:test";
import { FrameDecoder, FrameError, encodeFrame } from "../src/framing.js";

test("frames round-trip whole, split at every byte, and back to back", () => {
  const messages = [{ a: 1 }, { text: "héllo ✓" }, [1, 2, 3]];
  const wire = Buffer.concat(messages.map((m) => encodeFrame(m)));
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

test("a frame may carry raw bytes after its JSON", () => {
  const raw = Buffer.from([0, 10, 255, 10, 13]);
  const wire = Buffer.concat([encodeFrame({ a: "x\ny" }, raw), encodeFrame({ b: 2 })]);
  const frames = new FrameDecoder().pushFrames(wire);
  assert.deepEqual(frames[0]!.message, { a: "x\ny" });
  assert.deepEqual(frames[0]!.attachment, raw);
  assert.deepEqual(frames[1]!.message, { b: 2 });
  assert.equal(frames[1]!.attachment, undefined);
  assert.equal(frames[1]!.attachmentParts, undefined);
});

test("an attachment that arrives in pieces comes back as those pieces, without a copy", () => {
  const raw = Buffer.from("0123456789abcdef");
  const wire = encodeFrame({ n: 1 }, raw);
  const decoder = new FrameDecoder();
  const frames = [];
  for (let i = 0; i < wire.length; i += 5) frames.push(...decoder.pushFrames(wire.subarray(i, i + 5)));
  assert.equal(frames.length, 1);
  assert.deepEqual(frames[0]!.message, { n: 1 });
  assert.ok(frames[0]!.attachmentParts!.length > 1);
  assert.deepEqual(Buffer.concat(frames[0]!.attachmentParts!), raw);
  assert.deepEqual(frames[0]!.attachment, raw);
});
