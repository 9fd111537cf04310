import assert from "node:assert/strict";
import { test } from "node:test";
import { CappedBuffer } from "../src/capped-buffer.js";
import { completeUtf8Length } from "../src/utf8.js";

test("keeps bytes up to the cap and flags the rest", () => {
  const b = new CappedBuffer(5);
  b.push(Buffer.from("abc"));
  assert.equal(b.truncated, false);
  b.push(Buffer.from("defg"));
  b.push(Buffer.from("h"));
  assert.equal(b.text(), "abcde");
  assert.equal(b.truncated, true);
});

test("utf8 boundaries", () => {
  const s = Buffer.from("a€😀");
  assert.equal(completeUtf8Length(s), s.length);
  assert.equal(completeUtf8Length(s, 2), 1);
  assert.equal(completeUtf8Length(s, 4), 4);
  assert.equal(completeUtf8Length(s, 7), 4);
});
