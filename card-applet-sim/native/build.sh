#!/usr/bin/env bash
# Builds the pcscd LD_PRELOAD shim that sets TCP_NODELAY on vpcd's sockets
# (see vpcd-nodelay.c for why) into build/libdt-vpcd-nodelay.so with the
# machine's C compiler. Called by `npm run setup`; safe to run again.
# Exit 1 with the reason when it cannot be built (no compiler, no libc headers).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build/libdt-vpcd-nodelay.so"
# shellcheck source=../../scripts/lib/cc.sh
. "$here/../../scripts/lib/cc.sh"
tmp="$out.tmp.$$"
cc_compile vpcd-nodelay "$tmp" "libc headers: Debian package libc6-dev" "$here/vpcd-nodelay.c" -ldl
mv -f "$tmp" "$out"
echo "vpcd-nodelay: built $out"
