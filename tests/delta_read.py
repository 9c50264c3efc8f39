"""Reads a Delta or Iceberg table with a reader Headwater did not write, and prints its rows as
JSON.

    python3 tests/delta_read.py deltalake|duckdb|files TABLE_URI [COLUMNS]
    python3 tests/delta_read.py pyiceberg|duckdb-iceberg|iceberg-files iceberg:CATALOG_DB_OR_URL#NAMESPACE#TABLE [COLUMNS]

An Iceberg table is named by its catalog — a sqlite file or a postgres:// URL — (the SQL catalog's tables, catalog name
"headwater" unless HEADWATER_ICEBERG_CATALOG says otherwise), its namespace and its name.

Values are rendered the same way whichever reader is used (decimals and timestamps as exact
text, bytes as hex), so a test can compare the two readers with each other and with the source.
Prints one JSON object: {"version": N or null, "columns": [...], "rows": [[...], ...]} with the
rows sorted. For s3:// URIs the AWS_* environment variables name the endpoint and keys.
"""

import datetime
import decimal
import glob
import json
import os
import sys


def render(value):
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, datetime.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
            return value.isoformat(sep=" ") + "Z"
        return value.isoformat(sep=" ")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [render(v) for v in value]
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items()}
    return value


def storage_options():
    keys = {
        "AWS_ENDPOINT_URL": "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        "AWS_REGION": "AWS_REGION",
        "AWS_ALLOW_HTTP": "AWS_ALLOW_HTTP",
    }
    return {option: os.environ[var] for var, option in keys.items() if var in os.environ}


def read_deltalake(uri, columns):
    import deltalake

    table = deltalake.DeltaTable(uri, storage_options=storage_options() or None)
    data = table.to_pyarrow_table(columns=columns)
    names = data.column_names
    rows = [[render(row[n]) for n in names] for row in data.to_pylist()]
    return table.version(), names, rows


def read_files(uri, _columns):
    """The table's live files (one row each: path) as delta-rs sees its latest version."""
    import deltalake

    table = deltalake.DeltaTable(uri, storage_options=storage_options() or None)
    return table.version(), ["path"], [[path] for path in table.file_uris()]


def duckdb_extension(name):
    import duckdb

    pattern = os.path.join(
        os.path.dirname(os.path.dirname(duckdb.__file__)),
        "duckdb_ext",
        "extensions",
        "v*",
        "*",
        f"{name}.duckdb_extension",
    )
    found = glob.glob(pattern)
    if not found:
        sys.exit(f"the DuckDB extension {name} is not installed: pip install duckdb-ext-{name}")
    return found[0]


def read_duckdb(uri, columns):
    import duckdb

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{duckdb_extension('delta')}'")
    if uri.startswith("s3://"):
        con.execute(f"LOAD '{duckdb_extension('httpfs')}'")
        endpoint = os.environ["AWS_ENDPOINT_URL"].split("://", 1)[1]
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL false)",
            [
                os.environ["AWS_ACCESS_KEY_ID"],
                os.environ["AWS_SECRET_ACCESS_KEY"],
                os.environ.get("AWS_REGION", "us-east-1"),
                endpoint,
            ],
        )
    select = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    result = con.execute(f"SELECT {select} FROM delta_scan(?)", [uri])
    names = [d[0] for d in result.description]
    rows = [[render(v) for v in row] for row in result.fetchall()]
    return None, names, rows


def iceberg_name(uri):
    catalog_db, namespace, table = uri[len("iceberg:"):].split("#")
    return catalog_db, namespace, table


def iceberg_metadata_location(uri):
    """The table's current metadata file, as the catalog names it."""
    catalog_db, namespace, table = iceberg_name(uri)
    name = os.environ.get("HEADWATER_ICEBERG_CATALOG", "headwater")
    if catalog_db.startswith("postgres"):
        import psycopg2

        con = psycopg2.connect(catalog_db)
        try:
            with con.cursor() as cur:
                cur.execute(
                    "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = %s AND table_namespace = %s AND table_name = %s",
                    (name, namespace, table),
                )
                row = cur.fetchone()
        finally:
            con.close()
    else:
        import sqlite3

        with sqlite3.connect(catalog_db) as con:
            row = con.execute(
                "SELECT metadata_location FROM iceberg_tables WHERE catalog_name = ? AND table_namespace = ? AND table_name = ?",
                (name, namespace, table),
            ).fetchone()
    if row is None:
        sys.exit(f"no table {namespace}.{table} in the catalog {catalog_db}")
    return row[0]


def iceberg_table(uri):
    from pyiceberg.catalog.sql import SqlCatalog

    catalog_db, namespace, table = iceberg_name(uri)
    if catalog_db.startswith("postgres"):
        # the catalog in a PostgreSQL database: SQLAlchemy's psycopg2 URL
        database = "postgresql+psycopg2://" + catalog_db.split("://", 1)[1]
    else:
        database = f"sqlite:///{catalog_db}"
    properties = {"uri": database, "warehouse": "file:///nonexistent"}
    if "AWS_ENDPOINT_URL" in os.environ:
        properties.update(
            {
                "s3.endpoint": os.environ["AWS_ENDPOINT_URL"],
                "s3.access-key-id": os.environ["AWS_ACCESS_KEY_ID"],
                "s3.secret-access-key": os.environ["AWS_SECRET_ACCESS_KEY"],
                "s3.region": os.environ.get("AWS_REGION", "us-east-1"),
            }
        )
    catalog = SqlCatalog(os.environ.get("HEADWATER_ICEBERG_CATALOG", "headwater"), **properties)
    return catalog.load_table(tuple(namespace.split(".")) + (table,))


def read_pyiceberg(uri, columns):
    table = iceberg_table(uri)
    scan = table.scan(selected_fields=tuple(columns)) if columns else table.scan()
    data = scan.to_arrow()
    names = data.column_names
    rows = [[render(row[n]) for n in names] for row in data.to_pylist()]
    snapshot = table.current_snapshot()
    return (snapshot.sequence_number if snapshot else None), names, rows


def read_iceberg_files(uri, _columns):
    """The table's live data files (one row each: path) as pyiceberg sees its current snapshot."""
    table = iceberg_table(uri)
    files = [task.file.file_path for task in table.scan().plan_files()]
    return None, ["path"], [[path] for path in files]


def read_duckdb_iceberg(uri, columns):
    import duckdb

    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    # the Iceberg extension reads manifests with the avro one, and downloads it when missing
    con.execute(f"LOAD '{duckdb_extension('avro')}'")
    con.execute(f"LOAD '{duckdb_extension('iceberg')}'")
    location = iceberg_metadata_location(uri)
    if location.startswith("s3://"):
        con.execute(f"LOAD '{duckdb_extension('httpfs')}'")
        endpoint = os.environ["AWS_ENDPOINT_URL"].split("://", 1)[1]
        con.execute(
            "CREATE SECRET (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL false)",
            [
                os.environ["AWS_ACCESS_KEY_ID"],
                os.environ["AWS_SECRET_ACCESS_KEY"],
                os.environ.get("AWS_REGION", "us-east-1"),
                endpoint,
            ],
        )
    elif location.startswith("file://"):
        location = location[len("file://"):]
    select = ", ".join(f'"{c}"' for c in columns) if columns else "*"
    result = con.execute(f"SELECT {select} FROM iceberg_scan(?)", [location])
    names = [d[0] for d in result.description]
    rows = [[render(v) for v in row] for row in result.fetchall()]
    return None, names, rows


def main():
    reader, uri = sys.argv[1], sys.argv[2]
    columns = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
    read = {
        "deltalake": read_deltalake,
        "duckdb": read_duckdb,
        "files": read_files,
        "pyiceberg": read_pyiceberg,
        "duckdb-iceberg": read_duckdb_iceberg,
        "iceberg-files": read_iceberg_files,
    }[reader]
    version, names, rows = read(uri, columns)
    rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
    json.dump({"version": version, "columns": names, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
