#!/usr/bin/env bash
# Installs, when missing or at another version, the readers Headwater did not write that the
# tests and benchmarks read its output with: Avro (fastavro), Kafka (confluent-kafka), Delta
# (delta-rs's python binding and DuckDB 1.4.4 with its Delta extension, which loads from the
# wheel), Iceberg (pyiceberg through the SQL catalog on sqlite or PostgreSQL, and DuckDB's
# Iceberg extension, which needs the avro one beside it). Sourced or run.
install_python_readers() {
  local extensions
  # (no duckdb yet: an empty directory, so the check below fails and installs it)
  extensions="$(python3 -c 'import duckdb, os; print(os.path.dirname(os.path.dirname(duckdb.__file__)))' 2>/dev/null || true)/duckdb_ext/extensions"
  if python3 -c 'import fastavro, confluent_kafka.schema_registry.avro, deltalake, pyarrow, duckdb, pytz, pyiceberg.catalog.sql, psycopg2' 2>/dev/null \
    && ls "$extensions"/*/*/httpfs.duckdb_extension "$extensions"/*/*/iceberg.duckdb_extension "$extensions"/*/*/avro.duckdb_extension >/dev/null 2>&1 \
    && python3 -c 'import duckdb, deltalake, pyiceberg; assert duckdb.__version__ == "1.4.4" and deltalake.__version__ == "1.6.6" and pyiceberg.__version__ == "0.12.0"' 2>/dev/null; then
    return 0
  fi
  python3 -m pip install --quiet --disable-pip-version-check fastavro "confluent-kafka[avro,schemaregistry]" \
    "deltalake[pyarrow]==1.6.6" duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205 duckdb-ext-httpfs==1.4.4.20260205 \
    "pyiceberg[sql-sqlite,sql-postgres,pyarrow]==0.12.0" duckdb-ext-iceberg==1.4.4.20260205 duckdb-ext-avro==1.4.4.20260205 pytz
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  install_python_readers
fi
