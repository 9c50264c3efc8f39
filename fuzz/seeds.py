#!/usr/bin/env python3
"""Seed corpora for the fuzz targets, cut from real traffic of the test suite's servers.

MariaDB: the binlog files in $HEADWATER_MYSQL_DATADIR hold every change the tests made; each
transaction (with the format description before it) becomes a `binlog_stream` seed, each
TABLE_MAP with its rows event a `binlog_rows` seed.

PostgreSQL: `capture` makes a publication for all tables and a pgoutput slot; after the tests
ran, `extract` peeks the slot's messages (nothing is consumed) and cuts them into
`pgoutput_stream` and `pg_protocol` seeds per transaction, and `pg_copy_rows` seeds from the
inserted tuples (COPY's text format is the types' output text, escaped).

    python3 fuzz/seeds.py capture        # before the tests
    python3 fuzz/seeds.py extract        # after them: writes fuzz/seeds/<target>/
    python3 fuzz/seeds.py mariadb        # the MariaDB seeds only (no slot needed)
"""

import hashlib
import os
import struct
import subprocess
import sys
from pathlib import Path

SEEDS = Path(__file__).resolve().parent / "seeds"
SLOT = "headwater_fuzz_seeds"
PER_TARGET = 400
MAX_SEED = 4096

ROWS_EVENTS = [23, 24, 25, 30, 31, 32, 39]  # as in fuzz/src/mysql.rs
COPY_TYPES = [16, 17, 21, 23, 20, 700, 701, 1700, None, 25, 114, 3802, 2950, 1082,
              1083, 1114, 1184, 1007, 1009, 1231, 1185, 1001, 1000, 1186]  # fuzz/src/postgres.rs


def write(target, blobs):
    folder = SEEDS / target
    folder.mkdir(parents=True, exist_ok=True)
    kept = 0
    for blob in blobs:
        if not blob or len(blob) > MAX_SEED:
            continue
        (folder / hashlib.sha1(blob).hexdigest()).write_bytes(blob)
        kept += 1
        if kept >= PER_TARGET:
            break
    print(f"{target}: {kept} seeds")


def psql(sql):
    url = os.environ["HEADWATER_POSTGRES_ADMIN_URL"]
    out = subprocess.run(["psql", url, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql],
                         check=True, capture_output=True, text=True)
    return out.stdout.splitlines()


# --- MariaDB ---------------------------------------------------------------------------------

def binlog_events(path):
    data = path.read_bytes()
    if data[:4] != b"\xfebin":
        return
    at = 4
    while at + 19 <= len(data):
        size = struct.unpack_from("<I", data, at + 9)[0]
        if size < 19 or at + size > len(data):
            return
        yield data[at:at + size]
        at += size


def mariadb_seeds():
    datadir = Path(os.environ["HEADWATER_MYSQL_DATADIR"])
    streams, rows = [], []
    for path in sorted(datadir.glob("mariadb-bin.[0-9]*")):
        fde, txn, table_map = None, [], None
        for event in binlog_events(path):
            kind = event[4]
            if kind == 15:
                fde = event
            elif kind == 162:  # MariaDB GTID: a transaction (or a DDL statement) starts
                if txn and fde:
                    streams.append(bytes([0]) + fde + b"".join(txn[:64]))
                txn = [event]
            elif txn:
                txn.append(event)
                if kind in (16,) or (kind == 2 and b"COMMIT" in event):
                    if fde and len(streams) < 20 * PER_TARGET:
                        streams.append(bytes([0]) + fde + b"".join(txn[:64]))
                    txn = []
            if kind == 19:
                table_map = event
            elif kind in ROWS_EVENTS and table_map is not None:
                rows.append(rows_seed(table_map, event))
    # the most varied first: one per distinct length bucket, then the rest
    write("binlog_stream", spread(streams))
    write("binlog_rows", spread(rows))


def rows_seed(table_map, rows_event):
    """binlog_rows' layout: kind selector, TABLE_MAP part length, the part, the rows part."""
    body = table_map[19:-4]  # header off, CRC32 off
    at = 8
    at += 1 + body[at] + 1  # database name, with its length and NUL
    at += 1 + body[at] + 1  # table name
    columns = body[at:]
    kind = rows_event[4]
    rows = rows_event[19:-4]
    skip = 8
    if kind >= 30:
        skip += struct.unpack_from("<H", rows, 8)[0]
    return bytes([ROWS_EVENTS.index(kind)]) + struct.pack("<H", len(columns)) + columns + rows[skip:]


def spread(blobs):
    seen, first, rest = set(), [], []
    for blob in blobs:
        key = (len(blob).bit_length(), blob[:24])
        (rest if key in seen else first).append(blob)
        seen.add(key)
    return first + rest


# --- PostgreSQL ------------------------------------------------------------------------------

def capture():
    psql(f"DROP PUBLICATION IF EXISTS {SLOT}; CREATE PUBLICATION {SLOT} FOR ALL TABLES")
    if not psql(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{SLOT}'"):
        psql(f"SELECT pg_create_logical_replication_slot('{SLOT}', 'pgoutput')")
    print(f"slot {SLOT} captures from now on; run the tests, then `extract`")


def pg_messages():
    rows = psql(
        f"SELECT lsn::text || ' ' || encode(data, 'hex') FROM pg_logical_slot_peek_binary_changes("
        f"'{SLOT}', NULL, 200000, 'proto_version', '1', 'publication_names', '{SLOT}')")
    for row in rows:
        lsn, hexdata = row.split(" ", 1)
        high, low = lsn.split("/")
        yield (int(high, 16) << 32) | int(low, 16), bytes.fromhex(hexdata)


def postgres_seeds():
    relations, txns, txn = {}, [], []
    copies = []
    for lsn, message in pg_messages():
        kind = message[:1]
        if kind == b"R":
            relations[struct.unpack_from(">I", message, 1)[0]] = message
        if kind == b"B":
            txn = [(lsn, message)]
        elif txn:
            txn.append((lsn, message))
            if kind == b"C":
                txns.append(txn)
                txn = []
        if kind == b"I":
            oid = struct.unpack_from(">I", message, 1)[0]
            if oid in relations:
                copy = copy_seed(relations[oid], message)
                if copy:
                    copies.append(copy)
    streams, frames = [], []
    for txn in txns:
        txn = txn[:64]
        body = bytes([0])
        wire = bytes([97])  # pieces of 97 bytes: messages cross reads
        for lsn, message in txn:
            body += struct.pack("<H", len(message)) + message
            xlog = b"w" + struct.pack(">QQq", lsn, lsn + len(message), 0) + message
            wire += b"d" + struct.pack(">I", len(xlog) + 4) + xlog
        end = txn[-1][0] + 64
        body += struct.pack("<H", 0xFFFF) + struct.pack("<Q", end)
        keepalive = b"k" + struct.pack(">Qqb", end, 0, 1)
        wire += b"d" + struct.pack(">I", len(keepalive) + 4) + keepalive
        streams.append(body)
        frames.append(wire)
    write("pgoutput_stream", spread(streams))
    write("pg_protocol", spread(frames))
    write("pg_copy_rows", spread(copies))


def relation_oids(relation):
    """Each column's type OID of a pgoutput Relation message."""
    at = 1 + 4
    for _ in range(2):  # namespace, name
        at = relation.index(b"\0", at) + 1
    at += 1  # replica identity
    count = struct.unpack_from(">H", relation, at)[0]
    at += 2
    oids = []
    for _ in range(count):
        at += 1  # flags
        at = relation.index(b"\0", at) + 1
        oid, _typmod = struct.unpack_from(">Ii", relation, at)
        at += 8
        oids.append(oid)
    return oids


def copy_seed(relation, insert):
    """pg_copy_rows' layout for one inserted row: column count, type picks, a COPY line."""
    oids = relation_oids(relation)
    at = 1 + 4 + 1  # kind, relation, 'N'
    count = struct.unpack_from(">H", insert, at)[0]
    at += 2
    picks, fields = [], []
    for index in range(count):
        kind = insert[at:at + 1]
        at += 1
        value = None
        if kind == b"t":
            size = struct.unpack_from(">I", insert, at)[0]
            value = insert[at + 4:at + 4 + size]
            at += 4 + size
        elif kind != b"n":
            return None
        oid = oids[index] if index < len(oids) else None
        if oid in COPY_TYPES and len(picks) < 8:
            picks.append(COPY_TYPES.index(oid))
            fields.append(b"\\N" if value is None else escape(value))
    if not picks:
        return None
    return bytes([len(picks) - 1]) + bytes(picks) + b"\t".join(fields) + b"\n"


def escape(value):
    out = value.replace(b"\\", b"\\\\")
    for raw, escaped in ((b"\t", b"\\t"), (b"\n", b"\\n"), (b"\r", b"\\r")):
        out = out.replace(raw, escaped)
    return out


def source_config_seeds():
    examples = Path(__file__).resolve().parent.parent / "examples"
    blobs = []
    for path in sorted(examples.glob("*.toml")):
        text = path.read_text()
        # the [source] section's body, as the source reads it (its `kind` taken off)
        start = text.find("[source]")
        if start < 0:
            continue
        end = text.find("\n[", start + 1)
        section = text[start + len("[source]"):end if end > 0 else None]
        lines = [l for l in section.splitlines() if not l.strip().startswith("kind")]
        blobs.append("\n".join(lines).encode())
    write("source_config", blobs)


if __name__ == "__main__":
    step = sys.argv[1] if len(sys.argv) > 1 else "extract"
    if step == "capture":
        capture()
    elif step == "mariadb":
        mariadb_seeds()
    else:
        mariadb_seeds()
        postgres_seeds()
        source_config_seeds()
