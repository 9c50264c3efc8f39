#!/usr/bin/env bash
# Headwater end to end on the embedded default (Delta Lake tables on local disk): starts a
# throwaway MariaDB and PostgreSQL, writes changes to each while a Headwater pipeline per
# database streams them into ./quickstart/lake/{mariadb,postgres}, stops them cleanly, prints
# the tables, and queries the mirrors (the replica) with DuckDB.
# Pass --keep to leave the servers running afterwards.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
keep=${1:-}

work=$repo/quickstart
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33071}
export HEADWATER_POSTGRES_PORT=${HEADWATER_POSTGRES_PORT:-54331}

say() { printf '\n== %s\n' "$*"; }

say "building headwater (release)"
cargo build --release --locked --quiet
bin=$repo/target/release/headwater

say "starting a throwaway MariaDB on 127.0.0.1:$HEADWATER_MARIADB_PORT and PostgreSQL on 127.0.0.1:$HEADWATER_POSTGRES_PORT"
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
scripts/services.sh start mariadb postgres >/dev/null
sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" --default-character-set=utf8mb4 "$@"; }
export PGPASSWORD=postgres
pg() { psql -q -h 127.0.0.1 -p "$HEADWATER_POSTGRES_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  [ -n "${pg_pid:-}" ] && kill "$pg_pid" 2>/dev/null || true
  if [ "$keep" != "--keep" ]; then scripts/services.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

sql <<'SQL'
DROP DATABASE IF EXISTS shop;
CREATE DATABASE shop;
CREATE TABLE shop.customers (id INT PRIMARY KEY AUTO_INCREMENT, name VARCHAR(100) NOT NULL, email VARCHAR(200), joined DATE);
CREATE TABLE shop.orders (id BIGINT UNSIGNED PRIMARY KEY AUTO_INCREMENT, customer_id INT NOT NULL,
  total DECIMAL(10,2) NOT NULL, status ENUM('new','paid','shipped') NOT NULL DEFAULT 'new', placed_at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3));
INSERT INTO shop.customers (name, email, joined) VALUES ('Ada', 'ada@example.com', '2024-01-15'), ('Grace', NULL, '2024-02-29'), ('Linus 🐧', 'l@example.org', NULL);
INSERT INTO shop.orders (customer_id, total) VALUES (1, 19.99), (2, 250.00), (1, 5.25);
SQL

pg <<'SQL'
DROP SCHEMA IF EXISTS shop CASCADE;
SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = 'quickstart';
DROP PUBLICATION IF EXISTS quickstart;
CREATE SCHEMA shop AUTHORIZATION headwater;
SET ROLE headwater;
CREATE TABLE shop.accounts (id bigserial PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL,
  tags text[], opened timestamptz NOT NULL DEFAULT now());
INSERT INTO shop.accounts (owner, balance, tags) VALUES ('Ada', 100.00, '{vip}'), ('Grace', 42.50, NULL);
SQL

cat >"$work/postgres.toml" <<TOML
[source]
kind = "postgres"
url = "postgres://headwater:headwater@127.0.0.1:$HEADWATER_POSTGRES_PORT/postgres"
name = "quickstart_pg"
slot = "quickstart"
publication = "quickstart"
include = ["shop.*"]

[sink]
kind = "delta"
path = "$work/lake/postgres"
commit_interval = "1s"

[state]
path = "$work/state/postgres"
TOML

cat >"$work/headwater.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "quickstart"
server_id = 5401
include = ["shop.*"]
snapshot = "initial"   # copy every table, then stream

[sink]
kind = "delta"
path = "$work/lake/mariadb"
commit_interval = "1s"

[state]
path = "$work/state/mariadb"
TOML

say "headwater check (MariaDB, then PostgreSQL)"
"$bin" check --config "$work/headwater.toml"
"$bin" check --config "$work/postgres.toml"

say "streaming: two headwater pipelines run (in the background) while changes are written"
# The PostgreSQL pipeline creates its slot on the first start: catch up once so the rows below
# are written after the slot exists.
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --catch-up --config "$work/postgres.toml"
# The first run of each copies the rows that exist (the initial snapshot, op "r"); the changes
# below then arrive through the change stream.
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --catch-up --config "$work/headwater.toml"
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --config "$work/headwater.toml" &
pid=$!
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --config "$work/postgres.toml" &
pg_pid=$!
pg <<'SQL'
SET ROLE headwater;
INSERT INTO shop.accounts (owner, balance, tags) VALUES ('Linus', 7.00, '{new,"trial user"}');
BEGIN;
UPDATE shop.accounts SET balance = balance - 10 WHERE owner = 'Ada';
UPDATE shop.accounts SET balance = balance + 10 WHERE owner = 'Grace';
COMMIT;
ALTER TABLE shop.accounts ADD COLUMN frozen boolean NOT NULL DEFAULT false;
UPDATE shop.accounts SET frozen = true WHERE owner = 'Linus';
DELETE FROM shop.accounts WHERE owner = 'Grace';
SQL
sql <<'SQL'
UPDATE shop.orders SET status = 'paid' WHERE id = 1;
START TRANSACTION;
INSERT INTO shop.orders (customer_id, total, status) VALUES (3, 42.00, 'paid');
UPDATE shop.customers SET email = 'grace@example.com' WHERE id = 2;
COMMIT;
ALTER TABLE shop.customers ADD COLUMN vip BOOLEAN NOT NULL DEFAULT FALSE;
UPDATE shop.customers SET vip = TRUE WHERE id = 1;
DELETE FROM shop.orders WHERE id = 3;
SQL

# wait (up to two minutes) until both pipelines have made the last change durable
target=$(sql -N -e 'SELECT @@gtid_binlog_pos')
for attempt in $(seq 1 1200); do
  landed=$("$bin" offsets --config "$work/headwater.toml" 2>/dev/null | grep -o "\"gtid_set\": \"[^\"]*\"" | head -1 || true)
  [ "$landed" = "\"gtid_set\": \"$target\"" ] && break
  [ "$attempt" = 1200 ] && { echo "the MariaDB pipeline did not reach $target in two minutes" >&2; exit 1; }
  sleep 0.1
done

pg_target=$(pg -tAc "SELECT pg_current_wal_lsn()")
for attempt in $(seq 1 1200); do
  confirmed=$(pg -tAc "SELECT confirmed_flush_lsn >= '$pg_target' FROM pg_replication_slots WHERE slot_name = 'quickstart'")
  [ "$confirmed" = "t" ] && break
  [ "$attempt" = 1200 ] && { echo "the PostgreSQL pipeline did not confirm $pg_target in two minutes" >&2; exit 1; }
  sleep 0.1
done

say "stopping both pipelines with SIGTERM (they flush and commit first)"
kill -TERM "$pid" "$pg_pid"
wait "$pid"
wait "$pg_pid"
pid=
pg_pid=

say "what landed from MariaDB"
"$bin" inspect --config "$work/headwater.toml"
say "what landed from PostgreSQL"
"$bin" inspect --config "$work/postgres.toml"
say "the replica, queried with DuckDB (its Delta extension reads the mirror tables)"
if ! python3 -c 'import duckdb, pytz; assert duckdb.__version__ == "1.4.4"' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205 pytz
fi
python3 - "$work/lake" <<'PY'
import glob, os, sys, duckdb
lake = sys.argv[1]
ext = glob.glob(os.path.join(os.path.dirname(os.path.dirname(duckdb.__file__)), "duckdb_ext/extensions/*/*/delta.duckdb_extension"))[0]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
for table in ["mariadb/mirror/quickstart.shop.customers", "mariadb/mirror/quickstart.shop.orders", "postgres/mirror/quickstart_pg.shop.accounts"]:
    print(f"\nSELECT * FROM delta_scan('{lake}/{table}')")
    print(con.sql(f"SELECT * EXCLUDE (__position) FROM delta_scan('{lake}/{table}') ORDER BY 1"))
changes = con.sql(f"SELECT __op, count(*) AS changes FROM delta_scan('{lake}/mariadb/changelog/quickstart.shop.orders') GROUP BY 1 ORDER BY 1")
print("\nthe changelog of shop.orders, by operation"); print(changes)
PY
say "done: Delta tables in $work/lake/{mariadb,postgres}/{mirror,changelog}/ — query them with DuckDB, Spark, Trino, Polars or delta-rs"
