#!/usr/bin/env bash
# Headwater into Kafka: starts a throwaway MariaDB, the tansu Kafka-protocol broker and the
# schema-registry test double, streams a few changes into Kafka (Avro, schema-registry wire
# format), and reads them back with an independent consumer (confluent-kafka + AvroDeserializer).
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

work=$repo/quickstart-kafka
export HEADWATER_SERVICES_DIR=$work/services
export HEADWATER_MARIADB_PORT=${HEADWATER_MARIADB_PORT:-33072}
export HEADWATER_KAFKA_PORT=${HEADWATER_KAFKA_PORT:-19093}
export HEADWATER_REGISTRY_PORT=${HEADWATER_REGISTRY_PORT:-18082}
say() { printf '\n== %s\n' "$*"; }

say "building headwater (release)"
cargo build --release --locked --quiet
bin=$repo/target/release/headwater
python3 -c 'import confluent_kafka.schema_registry.avro' 2>/dev/null \
  || python3 -m pip install --quiet --disable-pip-version-check "confluent-kafka[avro,schemaregistry]"

say "starting MariaDB (127.0.0.1:$HEADWATER_MARIADB_PORT), Kafka (127.0.0.1:$HEADWATER_KAFKA_PORT), registry (127.0.0.1:$HEADWATER_REGISTRY_PORT)"
scripts/services.sh stop >/dev/null 2>&1 || true
rm -rf "$work"
mkdir -p "$work"
scripts/services.sh start mariadb kafka registry >/dev/null
trap 'scripts/services.sh stop >/dev/null 2>&1 || true' EXIT
sql() { mariadb --no-defaults -uroot --socket="$HEADWATER_SERVICES_DIR/mariadb/sock" --default-character-set=utf8mb4 "$@"; }
sql -e "CREATE DATABASE shop; CREATE TABLE shop.orders (id INT PRIMARY KEY, customer VARCHAR(50) NOT NULL, total DECIMAL(10,2), status ENUM('new','paid'))"

cat >"$work/headwater.toml" <<TOML
[source]
kind = "mysql"
url = "mysql://headwater:headwater@127.0.0.1:$HEADWATER_MARIADB_PORT"
name = "shop"
server_id = 5403
include = ["shop.*"]
snapshot = "initial"

[sink]
kind = "kafka"
brokers = "127.0.0.1:$HEADWATER_KAFKA_PORT"
topic_prefix = "shop"
schema_registry = "http://127.0.0.1:$HEADWATER_REGISTRY_PORT"
partitions = 3

[state]
path = "$work/state"
TOML

say "headwater run --catch-up (the initial snapshot: the table is still empty)"
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --catch-up --config "$work/headwater.toml"

say "writing changes, then headwater run --catch-up"
sql -e "INSERT INTO shop.orders VALUES (1, 'Ada', 19.99, 'new'), (2, 'Grace', 250.00, 'new');
        UPDATE shop.orders SET status = 'paid' WHERE id = 1; DELETE FROM shop.orders WHERE id = 2;"
HEADWATER_LOG=${HEADWATER_LOG:-warn} "$bin" run --catch-up --config "$work/headwater.toml"

say "topic shop.shop.orders, read back with confluent-kafka's AvroDeserializer"
python3 tests/kafka_consume.py "127.0.0.1:$HEADWATER_KAFKA_PORT" "http://127.0.0.1:$HEADWATER_REGISTRY_PORT" 3 shop.shop.orders \
  | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    v = m["value"]
    what = "tombstone" if v is None else "op=%s before=%s after=%s" % (v["op"], v["before"], v["after"])
    print("partition %d offset %d key=%s %s" % (m["partition"], m["offset"], m["key"], what))'
