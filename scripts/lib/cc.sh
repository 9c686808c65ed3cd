# Sourced by the native build scripts (protocol/native/build.sh, card-applet-sim/native/build.sh):
# the C compiler they share and the one way they compile.
#
# cc_compile NAME TMP HINT ARGS...: compiles with the machine's C compiler ($CC, default cc),
# strict warnings, position-independent, shared, into TMP (the caller moves it into place once it
# is satisfied with it). Exits 1 with NAME's reason when there is no compiler or the compile fails
# (HINT says what may be missing); TMP is then removed.
cc_compile() {
  local name="$1" tmp="$2" hint="$3"
  shift 3
  local cc="${CC:-cc}"
  if ! command -v "$cc" >/dev/null 2>&1; then
    echo "$name: no C compiler ($cc); install gcc (scripts/install-system.sh does) and run npm run setup again" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$tmp")"
  if ! "$cc" -O2 -Wall -Wextra -Werror -fPIC -shared -o "$tmp" "$@"; then
    rm -f "$tmp"
    echo "$name: $cc could not build it${hint:+ ($hint)}" >&2
    exit 1
  fi
}
