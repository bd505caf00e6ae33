#!/usr/bin/env bash
# A private RabbitMQ broker for the tests: its own node name, its own free loopback ports (AMQP,
# distribution and epmd), its own data directory. It touches no other broker: it is stopped by the
# process group it started, never by name, and a broker an operator runs on 5672 is left alone.
#
# Usage: scripts/rabbitmq.sh start|stop|stop-all|status|port|tls-port [DIR]
#   DIR (default: $EVI_RABBITMQ_DIR, else .rabbitmq in the repository) holds the broker's data, its
#   logs, its PIDs and the ports it was given. `start` prints the AMQP port; a second `start` after
#   `stop` (the broker-restart test) reuses the same ports. `port` prints the AMQP port, `tls-port`
#   the amqps one: the broker also listens with TLS, its CA, server certificate (for 127.0.0.1) and a
#   client certificate made by openssl in DIR/tls.
set -euo pipefail
cd "$(dirname "$0")/.."
base="$(realpath -m "${2:-${EVI_RABBITMQ_DIR:-.rabbitmq}}")"
mkdir -p "$base"

# A free loopback TCP port, chosen by the kernel.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ ! -f "$base/ports" ]; then
  echo "$(free_port) $(free_port) $(free_port)" > "$base/ports"
fi
read -r amqp_port dist_port epmd_port < "$base/ports"
[ -f "$base/tls_port" ] || free_port > "$base/tls_port"
tls_port="$(cat "$base/tls_port")"

# The amqps listener's certificates: a CA, the broker's certificate for 127.0.0.1, a client's.
make_certificates() {
  local dir="$base/tls"
  [ -f "$dir/client.pem" ] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 -subj "/CN=evi test broker CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 30 -extfile server.ext 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj "/CN=evi test client" 2>/dev/null
    openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 30 2>/dev/null
    chmod 600 ./*.key
    chmod 644 server.key  # the broker runs as root here, but keep it readable for its own user too
  )
}
[ -f "$base/node" ] || echo "evi-test-$$-$RANDOM@localhost" > "$base/node"

export HOME="$base/home"
export RABBITMQ_NODENAME="$(cat "$base/node")"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$amqp_port"
export RABBITMQ_DIST_PORT="$dist_port"
export ERL_EPMD_PORT="$epmd_port"
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_MNESIA_BASE="$base/mnesia"
export RABBITMQ_LOG_BASE="$base/log"
# Nothing from /etc/rabbitmq: no plugins (their listeners would take default ports), no config.
export RABBITMQ_CONF_ENV_FILE="$base/rabbitmq-env.conf"
export RABBITMQ_CONFIG_FILE="$base/rabbitmq"
export RABBITMQ_ADVANCED_CONFIG_FILE="$base/advanced.config"
export RABBITMQ_ENABLED_PLUGINS_FILE="$base/enabled_plugins"
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; }
alive() { [ -f "$base/$1.pid" ] && kill -0 "$(cat "$base/$1.pid")" 2>/dev/null; }

# Ends the process group we started as $1 (its leader's PID is in $1.pid), TERM then KILL.
stop_group() {
  [ -f "$base/$1.pid" ] || return 0
  local pid
  pid="$(cat "$base/$1.pid")"
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 0.5; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$base/$1.pid"
}

case "${1:-start}" in
  start)
    if alive server && listening; then echo "$amqp_port"; exit 0; fi
    if [ ! -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
      echo "rabbitmq: installing rabbitmq-server" >&2
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; then
      echo "rabbitmq: port $amqp_port (chosen earlier) is now taken by another process; remove $base/ports" >&2
      exit 1
    fi
    mkdir -p "$HOME" "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
    : > "$RABBITMQ_CONF_ENV_FILE"
    make_certificates
    cat > "$RABBITMQ_CONFIG_FILE.conf" <<CONF
listeners.ssl.default = 127.0.0.1:$tls_port
ssl_options.cacertfile = $base/tls/ca.pem
ssl_options.certfile = $base/tls/server.pem
ssl_options.keyfile = $base/tls/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = false
CONF
    echo "[]." > "$RABBITMQ_ADVANCED_CONFIG_FILE"
    echo "[]." > "$RABBITMQ_ENABLED_PLUGINS_FILE"
    # Our own epmd on our own port, in a session of its own, so the broker does not start (or
    # find) a shared one on 4369.
    if ! alive epmd; then
      setsid epmd -port "$epmd_port" -address 127.0.0.1 > "$base/epmd.out" 2>&1 < /dev/null &
      echo $! > "$base/epmd.pid"
    fi
    setsid /usr/lib/rabbitmq/bin/rabbitmq-server > "$base/server.out" 2>&1 < /dev/null &
    echo $! > "$base/server.pid"
    for _ in $(seq 1 120); do
      if listening; then echo "$amqp_port"; exit 0; fi
      if ! alive server; then break; fi
      sleep 0.5
    done
    echo "rabbitmq: did not start on 127.0.0.1:$amqp_port within 60 s; last output:" >&2
    tail -20 "$base/server.out" >&2 || true
    stop_group server
    exit 1
    ;;
  stop)
    # The broker only: its epmd stays for a restart (the broker-restart test); stop-all ends both.
    stop_group server
    ;;
  stop-all)
    stop_group server
    stop_group epmd
    ;;
  status)
    if alive server && listening; then echo "listening on 127.0.0.1:$amqp_port"; else echo "not listening"; exit 1; fi
    ;;
  port)
    echo "$amqp_port"
    ;;
  tls-port)
    echo "$tls_port"
    ;;
  *)
    echo "usage: scripts/rabbitmq.sh start|stop|stop-all|status|port|tls-port [DIR]" >&2
    exit 2
    ;;
esac
