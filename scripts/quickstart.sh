#!/usr/bin/env bash
# Headwater end to end on the embedded default (the lake sink): starts a throwaway MariaDB,
# writes changes while Headwater streams them into ./quickstart/lake, stops it cleanly, and
# prints what landed. Pass --keep to leave the server running afterwards.
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

say "starting a throwaway MariaDB on 127.0.0.1:$HEADWATER_MARIADB_PORT"
rm -rf "$work/lake" "$work/state"
mkdir -p "$work"
scripts/services.sh start mariadb >/dev/null
sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" --default-character-set=utf8mb4 "$@"; }
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
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

cat >"$work/headwater.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "quickstart"
server_id = 5401
include = ["shop.*"]
start = "earliest"   # a throwaway server: read its whole binlog

[sink]
kind = "lake"
path = "$work/lake"
commit_interval = "1s"

[state]
path = "$work/state"
TOML

say "headwater check"
"$bin" check --config "$work/headwater.toml"

say "streaming: headwater run (in the background) while changes are written"
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --config "$work/headwater.toml" &
pid=$!
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

target=$(sql -N -e 'SELECT @@gtid_binlog_pos')
for _ in $(seq 1 300); do
  landed=$("$bin" offsets --config "$work/headwater.toml" 2>/dev/null | grep -o "\"gtid_set\": \"[^\"]*\"" | head -1 || true)
  [ "$landed" = "\"gtid_set\": \"$target\"" ] && break
  sleep 0.1
done

say "stopping headwater with SIGTERM (it flushes and commits first)"
kill -TERM "$pid"
wait "$pid"
pid=

say "what landed"
"$bin" inspect --config "$work/headwater.toml"
say "done: the lake is in $work/lake (Avro object container files, one directory per table)"
