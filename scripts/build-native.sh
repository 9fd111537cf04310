#!/usr/bin/env bash
# Compiles the native helpers (packages/isolation/native) when a source is newer than its binary:
#   agentbox-enter  enters sandboxes (runs on the host, as root)
#   agentbox-fs     the files API inside a sandbox (static: it runs on any image)
#   agentbox-net    socket relays, and the port connector inside a sandbox (static)
set -euo pipefail
cd "$(dirname "$0")/../packages/isolation"
mkdir -p bin
build() {
  local src=$1 out=$2
  shift 2
  if [ ! -x "$out" ] || [ "$src" -nt "$out" ]; then
    cc -O2 -Wall -Wextra -Werror "$@" -o "$out.tmp" "$src"
    mv "$out.tmp" "$out"
  fi
}
build native/agentbox-enter.c bin/agentbox-enter
build native/agentbox-fs.c bin/agentbox-fs -static
build native/agentbox-net.c bin/agentbox-net -static
