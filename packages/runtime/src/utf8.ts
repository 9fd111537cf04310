/** Length of the longest prefix of `buf` that does not end inside a UTF-8 character. */
export function completeUtf8Length(buf: Buffer, end = buf.length): number {
  // Walk back over at most 3 continuation bytes to the lead byte of the last character.
  let i = end - 1;
  let back = 0;
  while (i >= 0 && back < 3 && (buf[i]! & 0xc0) === 0x80) {
    i--;
    back++;
  }
  if (i < 0) return end;
  const lead = buf[i]!;
  const need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
  return end - i >= need ? end : i;
}
