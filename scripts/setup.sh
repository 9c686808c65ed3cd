#!/usr/bin/env bash
# One-step setup for a fresh clone: system packages (as root), then npm
# packages from the lockfile. Install scripts run only for the packages
# approved in package.json "allowScripts" (native builds: better-sqlite3,
# @pokusew/pcsclite, cbor-extract; esbuild's binary check). Last, the pcscd
# shim that sets TCP_NODELAY on the vpcd driver's sockets and the P-256
# verification addon of @dt/protocol/native are compiled with the machine's
# C compiler (card-applet-sim/native, protocol/native; never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-system.sh

node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<19)) { console.error("setup: Node >= 20.19 is required, found "+process.versions.node); process.exit(1) }'

if [ -d node_modules ] && [ node_modules/.package-lock.json -nt package-lock.json ] && [ -z "${DT_SETUP_FORCE:-}" ]; then
  echo "setup: node_modules is up to date with package-lock.json"
else
  echo "setup: npm ci (native modules build from source; this can take a few minutes)"
  npm ci --no-audit --no-fund
fi

# Fail early and clearly if a native module did not build.
node -e 'require("better-sqlite3")' 2>/dev/null || { echo "setup: better-sqlite3 did not build; run: npm rebuild better-sqlite3" >&2; exit 1; }
# The private pcscd of tests, demo, lab and bench preloads it: without it every APDU through
# Debian's vpcd waits ~40 ms for a delayed ACK (card-applet-sim/native/vpcd-nodelay.c says why).
if ! bash card-applet-sim/native/build.sh; then
  echo "setup: the vpcd TCP_NODELAY shim did not build; the private pcscd still works without it, but every APDU through vpcd costs ~40 ms more (fix the compiler error above and run npm run setup again)" >&2
  exit 1
fi
# The ledger's and terminals' ES256 verification without a key import per cold key (protocol/native/p256-verify.c says why).
if ! bash protocol/native/build.sh; then
  echo "setup: the P-256 verification addon did not build; @dt/protocol/native still verifies through node:crypto, with a key import (about one verification more) per cold key (fix the error above and run npm run setup again)" >&2
  exit 1
fi
echo "setup: done"
