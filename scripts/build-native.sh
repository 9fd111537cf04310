#!/usr/bin/env bash
# Compiles the sandbox enter helper (packages/isolation/native) when its source is newer than the binary.
set -euo pipefail
cd "$(dirname "$0")/../packages/isolation"
src=native/agentbox-enter.c
out=bin/agentbox-enter
mkdir -p bin
if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
  cc -O2 -Wall -Wextra -Werror -o "$out.tmp" "$src"
  mv "$out.tmp" "$out"
fi
