#!/usr/bin/env bash
# Builds the pcscd LD_PRELOAD shim that sets TCP_NODELAY on vpcd's sockets
# (see vpcd-nodelay.c for why) into build/libdt-vpcd-nodelay.so with the
# machine's C compiler. Called by `npm run setup`; safe to run again.
# Exit 1 with the reason when it cannot be built (no compiler, no libc headers).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build/libdt-vpcd-nodelay.so"
cc="${CC:-cc}"
if ! command -v "$cc" >/dev/null 2>&1; then
  echo "vpcd-nodelay: no C compiler ($cc); install gcc (scripts/install-system.sh does) and run npm run setup again" >&2
  exit 1
fi
mkdir -p "$here/build"
tmp="$out.tmp.$$"
if ! "$cc" -O2 -Wall -Wextra -Werror -fPIC -shared -o "$tmp" "$here/vpcd-nodelay.c" -ldl; then
  rm -f "$tmp"
  echo "vpcd-nodelay: $cc could not build $here/vpcd-nodelay.c (libc headers: Debian package libc6-dev)" >&2
  exit 1
fi
mv -f "$tmp" "$out"
echo "vpcd-nodelay: built $out"
