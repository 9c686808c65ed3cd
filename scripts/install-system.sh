#!/usr/bin/env bash
# Installs the Debian packages the toolkit's real components need:
#   pcscd, vsmartcard-vpcd   the PC/SC daemon and the virtual reader driver the simulated card plugs into
#   libpcsclite-dev          headers to build @pokusew/pcsclite (used by nfc-pcsc)
#   pcsc-tools               pcsc_scan and scriptor, to look at served cards by hand
#   socat                    pty pairs for the serial transport
#   postgresql               the ledger's PostgreSQL backend (tests start a throwaway cluster)
#   python3, make, g++       node-gyp builds of native modules (better-sqlite3, pcsclite)
#   gcc, libc6-dev           the pcscd shim that gives vpcd's sockets TCP_NODELAY (card-applet-sim/native) and the
#                            P-256 verification addon (protocol/native; Node's headers come with Node itself)
#   chromium                 headless browser: the lab suite's test opens the HTML report and checks its plots
# Idempotent: does nothing when everything is present. Needs root to install;
# without root it lists what is missing and exits 0 so that the caller can
# decide (tests that need a missing component fail with a clear message).
set -euo pipefail

PACKAGES=(pcscd vsmartcard-vpcd libpcsclite-dev pcsc-tools socat postgresql python3 make g++ gcc libc6-dev chromium)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-system: all system packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system: missing Debian packages: ${missing[*]}" >&2
  echo "install-system: run as root on Debian/Ubuntu to install them: sudo bash scripts/install-system.sh" >&2
  exit 0
fi

echo "install-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
