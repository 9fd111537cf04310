#!/usr/bin/env bash
# Installs what agentbox needs on this machine, then builds it. Safe to run again:
# every step is skipped when already done. Called by `npm start`, `npm test` and `npm run bench`.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }

node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  say "Node.js 20 or newer is required (found $(node --version))"; exit 1
fi

# System packages: bubblewrap (sandboxes), util-linux (mount, nsenter), e2fsprogs (sandbox disks and volumes), attr
# (setfattr: overlay whiteouts of imported image layers), a C compiler (the enter helper), and make, g++ and python3
# (native npm modules: better-sqlite3, node-pty).
# With --test, also chromium (the browser terminal test drives it headless), umoci, skopeo and busybox-static
# (tests build OCI images with real tools), and curl and iproute2 (network tests).
missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v mount >/dev/null 2>&1 || missing+=(mount)
command -v mkfs.ext4 >/dev/null 2>&1 || PATH="$PATH:/sbin:/usr/sbin" command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v setfattr >/dev/null 2>&1 || missing+=(attr)
# Network mode "open": user-mode networking for sandboxes.
command -v slirp4netns >/dev/null 2>&1 || PATH="$PATH:/usr/sbin:/sbin" command -v slirp4netns >/dev/null 2>&1 || missing+=(slirp4netns)
# Code contexts: CPython with venv and pip (dependency installs), inside sandboxes of the host image.
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
[ -x /usr/bin/python3 ] && /usr/bin/python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v umoci >/dev/null 2>&1 || missing+=(umoci)
  command -v skopeo >/dev/null 2>&1 || missing+=(skopeo)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  # Network tests: curl inside sandboxes, `ip netns` for a test host that open sandboxes reach.
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  PATH="$PATH:/usr/sbin:/sbin" command -v ip >/dev/null 2>&1 || missing+=(iproute2)
fi
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${missing[*]} with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    say "missing system packages: ${missing[*]}"
    say "install them as root (e.g. 'sudo apt-get install ${missing[*]}') and run this again"
    exit 1
  fi
fi

# npm dependencies: install when absent or when the lock file changed since the last install.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  if [ -f package-lock.json ]; then npm ci --no-audit --no-fund >&2; else npm install --no-audit --no-fund >&2; fi
fi

say "building"
npm run --silent build >&2
