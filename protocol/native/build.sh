#!/usr/bin/env bash
# Builds the ES256 verification addon of @dt/protocol/native (p256-verify.c says why) into
# build/dt-p256.node with the machine's C compiler against the running Node's headers and
# OpenSSL (the symbols Node exports; linked to libcrypto only when this Node uses a shared
# OpenSSL). Called by `npm run setup`; safe to run again. Without it, @dt/protocol/native
# verifies through node:crypto (same answers, a key import per cold key).
# Exit 1 with the reason when it cannot be built (no compiler, no Node headers).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/build/dt-p256.node"
# shellcheck source=../../scripts/lib/cc.sh
. "$here/../../scripts/lib/cc.sh"
prefix="$(node -p 'require("node:path").resolve(process.execPath, "..", "..")')"
inc="$prefix/include/node"
if [ ! -f "$inc/node_api.h" ] || [ ! -f "$inc/openssl/ec.h" ]; then
  echo "p256-verify: no Node headers with OpenSSL's at $inc (they come with Node's package; Debian: libnode-dev)" >&2
  exit 1
fi
libs=()
if [ "$(node -p 'String(process.config.variables.node_shared_openssl)')" = "true" ]; then libs+=(-lcrypto); fi
tmp="$here/build/dt-p256.tmp-$$.node" # .node: require loads it as an addon
cc_compile p256-verify "$tmp" "" -I"$inc" "$here/p256-verify.c" "${libs[@]}" -lpthread
# It must load in this Node and verify a known signature before it replaces a previous build.
if ! node -e '
const a = require(process.argv[1]);
const c = require("node:crypto");
const { publicKey, privateKey } = c.generateKeyPairSync("ec", { namedCurve: "P-256" });
const j = publicKey.export({ format: "jwk" });
const pub = new Uint8Array(Buffer.concat([Buffer.from([4]), Buffer.from(j.x, "base64url"), Buffer.from(j.y, "base64url")]));
const m = new Uint8Array(Buffer.from("dt-p256 build check"));
const s = new Uint8Array(c.sign("sha256", m, { key: privateKey, dsaEncoding: "ieee-p1363" }));
const bad = s.slice(); bad[10] ^= 1;
if (a.verify(pub, m, s) !== true || a.verify(pub, m, bad) !== false) process.exit(1);
' "$tmp"; then
  rm -f "$tmp"
  echo "p256-verify: the built addon does not load or verify in this Node ($(node -v))" >&2
  exit 1
fi
mv -f "$tmp" "$out"
echo "p256-verify: built $out"
