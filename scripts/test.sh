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

# Third-party clients the tests drive evi with: OpenSIPS' own tools from PyPI, in a virtual
# environment of the repository (.venv, not committed).
python_packages=(opensipscli opensips pika)
if [ ! -x .venv/bin/opensips-cli ] || [ ! -x .venv/bin/opensips-event ] || ! .venv/bin/python3 -c "import pika" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1; then
    log "installing python3-venv"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  log "creating .venv with ${python_packages[*]}"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${python_packages[@]}"
fi

# The real RabbitMQ broker the rabbitmq tests publish to (Debian's rabbitmq-server, loopback only).
if ! bash scripts/rabbitmq.sh status >/dev/null 2>&1; then
  log "starting rabbitmq-server on 127.0.0.1:5672"
  bash scripts/rabbitmq.sh start
  trap 'bash scripts/rabbitmq.sh stop' EXIT  # we started it: stop it when the tests end
fi

log "building"
swift build --build-tests
log "testing"
# One test at a time: several integration tests drive real processes with blocking socket calls,
# which would starve the others of the two cooperative threads this machine has.
swift test --skip-build --no-parallel "$@"
