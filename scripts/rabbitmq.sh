#!/usr/bin/env bash
# Starts (or stops) a private RabbitMQ broker bound to 127.0.0.1:5672 for the tests.
# Usage: scripts/rabbitmq.sh start|stop|status
set -euo pipefail
cd "$(dirname "$0")/.."
base="$(pwd)/.rabbitmq"
export HOME="$base/home"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=5672
export RABBITMQ_NODENAME=rabbit@localhost
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE="$base/mnesia"
export RABBITMQ_LOG_BASE="$base/log"
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
export RABBITMQ_DIST_PORT=25672

listening() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }

case "${1:-start}" in
  start)
    if listening; then echo "rabbitmq: already listening on 127.0.0.1:5672"; exit 0; fi
    if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
      echo "rabbitmq: installing rabbitmq-server" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    fi
    mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    nohup /usr/lib/rabbitmq/bin/rabbitmq-server > "$base/server.out" 2>&1 &
    echo $! > "$base/pid"
    for _ in $(seq 1 120); do
      if listening; then echo "rabbitmq: listening on 127.0.0.1:5672"; exit 0; fi
      sleep 0.5
    done
    echo "rabbitmq: did not start within 60 s; last output:" >&2
    tail -20 "$base/server.out" >&2 || true
    exit 1
    ;;
  stop)
    # Whoever started it (this checkout or another): the Erlang VM running rabbit, and its script.
    if [ -f "$base/pid" ]; then kill -TERM "$(cat "$base/pid")" 2>/dev/null || true; rm -f "$base/pid"; fi
    pkill -TERM -f 'beam.smp.*rabbit' 2>/dev/null || true
    pkill -TERM -f '/usr/lib/rabbitmq/bin/rabbitmq-server' 2>/dev/null || true
    for _ in $(seq 1 60); do listening || break; sleep 0.5; done
    if listening; then pkill -KILL -f 'beam.smp.*rabbit' 2>/dev/null || true; sleep 1; fi
    epmd -kill >/dev/null 2>&1 || true
    ;;
  status)
    listening && echo "listening" || { echo "not listening"; exit 1; }
    ;;
esac
