#!/usr/bin/env bash
# A private PostgreSQL for the tests: its own data directory, a free loopback port, its socket in
# that directory, SCRAM-SHA-256 passwords, run as the postgres user (PostgreSQL refuses root), and
# stopped by its own pg_ctl. A PostgreSQL already on the machine is neither used nor touched.
#
#   postgres.sh start DIR     prints the URL (postgres://evi:PASSWORD@127.0.0.1:PORT/postgres)
#   postgres.sh start-tls DIR the same with TLS only: a test CA made by openssl (DIR/ca.pem), a
#                             server certificate for DNS:localhost and IP:127.0.0.1 signed by it,
#                             ssl = on, and a pg_hba.conf of hostssl lines only (a client without
#                             TLS is refused by PostgreSQL itself)
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
  options="$(cat "$dir/options" 2>/dev/null || true)"
  as_postgres "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 30 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off $options" start >/dev/null
}

# A CA and a server certificate in DIR, and the server told to use them for every TCP client.
make_tls() {
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj "/CN=evi test postgres CA" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj "/CN=localhost" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 \
      -extfile server.ext 2>/dev/null
    chown postgres server.key server.pem ca.pem
    chmod 600 server.key
  )
  cat > "$dir/data/pg_hba.conf" <<HBA
local   all all                scram-sha-256
hostssl all all 127.0.0.1/32   scram-sha-256
hostssl all all ::1/128        scram-sha-256
HBA
  chown postgres "$dir/data/pg_hba.conf"
  printf '%s' "-c ssl=on -c ssl_cert_file=$dir/server.pem -c ssl_key_file=$dir/server.key" > "$dir/options"
}

case "$command" in
  start|start-tls)
    mkdir -p "$dir"
    chown postgres "$dir"
    chmod 700 "$dir"
    password="evi-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')"
    printf '%s\n' "$password" > "$dir/pw"
    chown postgres "$dir/pw"
    as_postgres "$bin/initdb" -D "$dir/data" -U evi -A scram-sha-256 --pwfile="$dir/pw" >/dev/null
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' > "$dir/port"
    [ "$command" = start-tls ] && make_tls
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
  *) echo "usage: $0 start|start-tls|stop|restart DIR" >&2; exit 2 ;;
esac
