"""Decodes Avro object container files with fastavro, an independent Avro implementation, and
prints their schema and records as JSON (decimals as strings, bytes as hex, times as ISO text)."""
import datetime
import decimal
import json
import sys
import uuid

try:
    import fastavro
except ImportError:
    sys.exit("fastavro is missing: pip install fastavro (scripts/test.sh installs it)")


def plain(value):
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def main(paths):
    out = []
    for path in paths:
        with open(path, "rb") as handle:
            reader = fastavro.reader(handle)
            out.append({"schema": reader.writer_schema, "records": [plain(r) for r in reader]})
    json.dump(out, sys.stdout, indent=2, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
