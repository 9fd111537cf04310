import assert from "node:assert/strict";
import { test } from "node:test";
import { parseBytes, parseCpu } from "../src/units.js";

test("byte quantities", () => {
  assert.equal(parseBytes("512Mi"), 512 * 1024 * 1024);
  assert.equal(parseBytes("1Gi"), 1024 ** 3);
  assert.equal(parseBytes("1.5Ki"), 1536);
  assert.equal(parseBytes("100M"), 100_000_000);
  assert.equal(parseBytes("42"), 42);
  for (const bad of ["", "Mi", "-1Gi", "1 Gi", "1gi", "1GB", "0", "1e9"]) assert.equal(parseBytes(bad), undefined, bad);
});

test("cpu quantities", () => {
  assert.equal(parseCpu("500m"), 0.5);
  assert.equal(parseCpu("2"), 2);
  assert.equal(parseCpu("0.25"), 0.25);
  for (const bad of ["", "m", "0", "-1", "1c", "500 m"]) assert.equal(parseCpu(bad), undefined, bad);
});
