#!/usr/bin/env bash
# A private PostgreSQL for the tests: its own data directory, a free loopback port, its socket in
# that directory, SCRAM-SHA-256 passwords, run as the postgres user (PostgreSQL refuses root), and
# stopped by its own pg_ctl. A PostgreSQL already on the machine is neither used nor touched.
#
#   postgres.sh start DIR     prints the URL (postgres://evi:PASSWORD@127.0.0.1:PORT/postgres)
#   postgres.sh stop DIR      stops it (fast shutdown)
#   postgres.sh restart DIR   stops and starts it again on the same port and data
set -euo pipefail
command="$1"
dir="$2"
bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
# From /: the postgres user cannot enter the caller's directory (runuser would complain).
as_postgres() { (cd / && runuser -u postgres -- "$@"); }

start() {
  port="$(cat "$dir/port")"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
}

case "$command" in
  start)
    mkdir -p "$dir"
    chown postgres "$dir"
    chmod 700 "$dir"
    password="evi-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
    printf '%s\n' "$password" > "$dir/pw"
    chown postgres "$dir/pw"
    as_postgres "$bin/initdb" -D "$dir/data" -U evi -A scram-sha-256 --pwfile="$dir/pw" >/dev/null
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' > "$dir/port"
    start
    echo "postgres://evi:$password@127.0.0.1:$(cat "$dir/port")/postgres"
    ;;
  stop)
    [ -d "$dir/data" ] && as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    ;;
  restart)
    as_postgres "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    start
    ;;
  *) echo "usage: $0 start|stop|restart DIR" >&2; exit 2 ;;
esac
