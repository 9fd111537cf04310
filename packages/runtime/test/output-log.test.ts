import assert from "node:assert/strict";
import { test } from "node:test";
import { OutputLog } from "../src/output-log.js";

test("reads from any retained offset, and says where the log starts once bytes were evicted", () => {
  const log = new OutputLog(10);
  log.append(Buffer.from("0123456789"));
  assert.deepEqual(log.read(3), { data: "3456789", offset: 3, bytes: 7 });
  log.append(Buffer.from("abcd"));
  assert.equal(log.start, 4);
  assert.equal(log.end, 14);
  assert.deepEqual(log.read(0), { data: "456789abcd", offset: 4, bytes: 10, truncated: { requestedOffset: 0, availableOffset: 4 } });
  assert.deepEqual(log.read(12, 1), { data: "c", offset: 12, bytes: 1 });
  assert.deepEqual(log.read(14), { data: "", offset: 14, bytes: 0 });
});

test("never returns half a character until the stream has ended", () => {
  const log = new OutputLog(100);
  const euro = Buffer.from("€"); // 3 bytes
  log.append(Buffer.concat([Buffer.from("a"), euro.subarray(0, 2)]));
  assert.deepEqual(log.read(0), { data: "a", offset: 0, bytes: 1 });
  assert.deepEqual(log.read(1), { data: "", offset: 1, bytes: 0 });
  log.append(euro.subarray(2));
  assert.deepEqual(log.read(1), { data: "€", offset: 1, bytes: 3 });
  log.append(Buffer.from([0xe2]));
  log.close();
  assert.deepEqual(log.read(4), { data: "\ufffd", offset: 4, bytes: 1 });
});

test("raw reads and discard", () => {
  const log = new OutputLog(100);
  log.append(Buffer.from([1, 2]));
  log.append(Buffer.from([3, 4, 5]));
  const r = log.readBytes(1, 3);
  assert.deepEqual(Buffer.concat(r.data), Buffer.from([2, 3, 4]));
  assert.equal(r.length, 3);
  log.discard();
  assert.equal(log.retained, 0);
  assert.deepEqual(log.read(0).truncated, { requestedOffset: 0, availableOffset: 5 });
});

test("waitBeyond wakes on new data, on close, or after the timeout", async () => {
  const log = new OutputLog(100);
  const t0 = Date.now();
  await log.waitBeyond(0, 30);
  assert.ok(Date.now() - t0 >= 25);
  const woke = log.waitBeyond(0, 5000);
  setTimeout(() => log.append(Buffer.from("x")), 10);
  await woke;
  assert.equal(log.end, 1);
  const closed = log.waitBeyond(1, 5000);
  log.close();
  await closed;
});
