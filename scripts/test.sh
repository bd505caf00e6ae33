#!/usr/bin/env bash
# Runs every test of evi on a fresh machine: installs what is missing, starts the services the
# tests need, then runs `swift test`. Safe to run again; it only installs what is not there.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '== %s\n' "$*" >&2; }

# Debian packages the tests use: the RabbitMQ broker and Kamailio with its evapi module (the tests
# start private ones, on free loopback ports), librdkafka (whose mock cluster is the tests' Kafka
# peer; evi loads librdkafka.so.1 at run time) and kcat; python3-venv too where the python3 on
# PATH cannot make a virtual environment.
packages=(rabbitmq-server kamailio kamailio-extra-modules librdkafka-dev kcat curl chromium chromium-driver postgresql wrk)
python3 -m venv --help >/dev/null 2>&1 || packages+=(python3-venv)
missing=()
for package in "${packages[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Third-party clients and peers the tests drive evi with, from PyPI, in a virtual environment of
# the repository (.venv, not committed): OpenSIPS' own tools, pika (RabbitMQ), moto's SQS server
# with boto3 (SQS), standardwebhooks (the webhook receiver's signature check), selenium (drives
# Debian's chromium for the status page) and websockets (a WebSocket subscriber).
python_packages=(opensipscli opensips pika "moto[server]" boto3 standardwebhooks selenium websockets)
if [ ! -x .venv/bin/opensips-cli ] || [ ! -x .venv/bin/opensips-event ] || [ ! -x .venv/bin/moto_server ] \
  || ! .venv/bin/python3 -c "import pika, boto3, standardwebhooks, selenium, websockets" 2>/dev/null; then
  log "installing into .venv: ${python_packages[*]}"
  [ -x .venv/bin/pip ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${python_packages[@]}"
fi

# A private RabbitMQ broker for the rabbitmq tests: its own node, free loopback ports and a data
# directory of its own, stopped (by the PIDs it started) when the tests end. A broker already on the
# machine is neither used nor touched.
export EVI_RABBITMQ_DIR EVI_POSTGRES_DIR
EVI_RABBITMQ_DIR="$(mktemp -d /tmp/evi-rabbitmq.XXXXXX)"
EVI_POSTGRES_DIR="$(mktemp -d /tmp/evi-postgres.XXXXXX)"
trap 'bash scripts/rabbitmq.sh stop-all; rm -rf "$EVI_RABBITMQ_DIR"; bash scripts/postgres.sh stop "$EVI_POSTGRES_DIR"; rm -rf "$EVI_POSTGRES_DIR"' EXIT
log "starting a private rabbitmq-server"
EVI_RABBITMQ_PORT="$(bash scripts/rabbitmq.sh start)"
export EVI_RABBITMQ_PORT
EVI_RABBITMQ_TLS_PORT="$(bash scripts/rabbitmq.sh tls-port)"
export EVI_RABBITMQ_TLS_PORT
log "rabbitmq-server listening on 127.0.0.1:$EVI_RABBITMQ_PORT (amqps $EVI_RABBITMQ_TLS_PORT)"

# A private PostgreSQL (the cluster state store's tests): initdb in its own directory, a free
# loopback port, run as the postgres user, stopped by its own pg_ctl when the tests end.
log "starting a private PostgreSQL"
EVI_POSTGRES_URL="$(bash scripts/postgres.sh start "$EVI_POSTGRES_DIR")"
export EVI_POSTGRES_URL
log "PostgreSQL listening on 127.0.0.1:$(cat "$EVI_POSTGRES_DIR/port")"

# The Kafka tests' peer: librdkafka's mock cluster in a small host program (not a SwiftPM target,
# so that building evi never needs librdkafka).
mkdir -p .build
if [ ! -x .build/kafka-mock-cluster ] || [ Tests/Fixtures/kafka/mock_cluster.c -nt .build/kafka-mock-cluster ]; then
  log "building the Kafka mock cluster"
  cc -O2 -o .build/kafka-mock-cluster Tests/Fixtures/kafka/mock_cluster.c -lrdkafka -lpthread
fi

log "building"
swift build --build-tests
log "testing"
# One test at a time: several integration tests drive real processes with blocking socket calls,
# which would starve the others of the two cooperative threads this machine has.
swift test --skip-build --no-parallel "$@"
