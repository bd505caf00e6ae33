#!/usr/bin/env bash
# Runs every test of evi on a fresh machine: installs what is missing, starts the services the
# tests need, then runs `swift test`. Safe to run again; it only installs what is not there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

# Debian packages the tests use (none yet beyond the toolchain; later issues add clients and servers).
packages=()
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

log "building"
swift build --build-tests
log "testing"
swift test --skip-build "$@"
