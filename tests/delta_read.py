"""Reads a Delta table with a reader Headwater did not write, and prints its rows as JSON.

    python3 tests/delta_read.py deltalake|duckdb|files TABLE_URI [COLUMNS]

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


def main():
    reader, uri = sys.argv[1], sys.argv[2]
    columns = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else None
    read = {"deltalake": read_deltalake, "duckdb": read_duckdb, "files": read_files}[reader]
    version, names, rows = read(uri, columns)
    rows.sort(key=lambda r: json.dumps(r, sort_keys=True))
    json.dump({"version": version, "columns": names, "rows": rows}, sys.stdout)


if __name__ == "__main__":
    main()
