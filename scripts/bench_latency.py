"""Commit-to-visible latency of a running Headwater pipeline (used by scripts/bench-latency.sh).

Writes a steady load into MariaDB through one `mariadb` client, 100 transactions a second of
RATE/100 rows (at least 10): every transaction is one INSERT followed by `SELECT UNIX_TIMESTAMP(NOW(6))`, whose answer is the
server's clock just after the commit. Meanwhile it watches where the pipeline makes changes
visible: a Kafka topic (a consumer reading from the start; a message is readable only once the
brokers acknowledged it, so this bounds commit-to-durable from above) or a lake table directory
(a file appears under its final name only once its commit is durable) or a Delta changelog table
(a change is there once the `_delta_log` commit adding its file exists). Each row's latency is the
time it was seen minus its transaction's commit time. Prints p50, p99 and max.

Usage: bench_latency.py SOCKET DATABASE TABLE RATE SECONDS kafka BROKERS TOPIC
       bench_latency.py SOCKET DATABASE TABLE RATE SECONDS lake TABLE_DIRECTORY
       bench_latency.py SOCKET DATABASE TABLE RATE SECONDS delta CHANGELOG_TABLE_DIRECTORY
TABLE is `(id BIGINT PRIMARY KEY, v VARCHAR(10))`, empty.
"""
import json
import os
import subprocess
import sys
import threading
import time

socket, database, table = sys.argv[1], sys.argv[2], sys.argv[3]
rate, seconds, target = int(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
# 100 transactions a second: one client committing with the server's fsyncs on keeps up
ROWS_PER_TXN = max(10, rate // 100)
transactions = int(rate * seconds / ROWS_PER_TXN)
committed = {}  # transaction number -> commit time (s)
seen = {}  # row id -> time seen (s)
done_writing = threading.Event()


def write_load():
    client = subprocess.Popen(
        ["mariadb", "--no-defaults", "-uroot", f"--socket={socket}", "-N", "-B", database],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def read_commits():
        for line in client.stdout:
            number, at = line.split("\t")
            committed[int(number)] = float(at)

    reader = threading.Thread(target=read_commits)
    reader.start()
    interval = ROWS_PER_TXN / rate
    start = time.monotonic()
    for number in range(transactions):
        delay = start + number * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        low = number * ROWS_PER_TXN + 1
        high = low + ROWS_PER_TXN - 1
        client.stdin.write(
            f"INSERT INTO {table} SELECT seq, 'x' FROM seq_{low}_to_{high}; SELECT {number}, UNIX_TIMESTAMP(NOW(6));\n")
    client.stdin.close()
    client.wait()
    reader.join()
    behind = time.monotonic() - start - seconds
    if behind > 1:
        print(f"note: the load ran {behind:.1f} s behind its schedule (the server's commit rate)", file=sys.stderr)
    done_writing.set()


def row_id(value):
    after = value.get("after") if isinstance(value, dict) else None
    if isinstance(after, dict) and len(after) == 1 and "id" not in after:
        after = next(iter(after.values()))  # a union written with its branch name
    if not isinstance(after, dict):
        return None
    found = after.get("id")
    if isinstance(found, dict):
        found = next(iter(found.values()))
    return found


def watch_kafka(brokers, topic):
    from confluent_kafka import Consumer, TopicPartition
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": "headwater-latency",
                         "enable.auto.commit": False, "fetch.wait.max.ms": 5})
    while topic not in consumer.list_topics(timeout=10).topics:
        time.sleep(0.05)
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    total = transactions * ROWS_PER_TXN
    deadline = None
    while len(seen) < total:
        message = consumer.poll(0.1)
        now = time.time()
        if message is None or message.error() or message.value() is None:
            if done_writing.is_set():
                deadline = deadline or now + 60
                if now > deadline:
                    break
            continue
        found = row_id(json.loads(message.value()))
        if found is not None:
            seen.setdefault(found, now)
    consumer.close()


def watch_lake(directory):
    from fastavro import reader
    read = set()
    total = transactions * ROWS_PER_TXN
    deadline = None
    while len(seen) < total:
        now = time.time()
        names = sorted(n for n in os.listdir(directory) if n.endswith(".avro") and not n.startswith(".")) \
            if os.path.isdir(directory) else []
        fresh = [n for n in names if n not in read]
        for name in fresh:
            with open(os.path.join(directory, name), "rb") as f:
                for record in reader(f):
                    found = row_id(record)
                    if found is not None:
                        seen.setdefault(found, now)
            read.add(name)
        if not fresh:
            if done_writing.is_set():
                deadline = deadline or now + 60
                if now > deadline:
                    break
            time.sleep(0.002)


def watch_delta(table_directory):
    import urllib.parse
    import pyarrow.parquet as parquet
    log = os.path.join(table_directory, "_delta_log")
    read = set()
    total = transactions * ROWS_PER_TXN
    deadline = None
    while len(seen) < total:
        now = time.time()
        # a commit file exists only once it is complete (written elsewhere, then linked in place)
        names = sorted(n for n in os.listdir(log) if n.endswith(".json") and not n.startswith(".")) \
            if os.path.isdir(log) else []
        fresh = [n for n in names if n not in read]
        for name in fresh:
            with open(os.path.join(log, name)) as f:
                for line in f:
                    added = json.loads(line).get("add")
                    if added is None:
                        continue
                    path = os.path.join(table_directory, urllib.parse.unquote(added["path"]))
                    for found in parquet.read_table(path, columns=["id"]).column("id").to_pylist():
                        seen.setdefault(found, now)
            read.add(name)
        if not fresh:
            if done_writing.is_set():
                deadline = deadline or now + 60
                if now > deadline:
                    break
            time.sleep(0.002)


writer = threading.Thread(target=write_load)
writer.start()
if target == "kafka":
    watch_kafka(sys.argv[7], sys.argv[8])
elif target == "delta":
    watch_delta(sys.argv[7])
else:
    watch_lake(sys.argv[7])
writer.join()

latencies = []
for number, at in committed.items():
    for row in range(number * ROWS_PER_TXN + 1, (number + 1) * ROWS_PER_TXN + 1):
        if row in seen:
            latencies.append((seen[row] - at) * 1000)
missing = transactions * ROWS_PER_TXN - len(latencies)
if missing:
    print(f"{missing} rows were never seen", file=sys.stderr)
    sys.exit(1)
latencies.sort()


def percentile(p):
    return latencies[min(len(latencies) - 1, int(len(latencies) * p / 100))]


print(f"{target} at {rate} changes/s ({ROWS_PER_TXN}-row transactions) for {seconds:.0f} s ({len(latencies)} rows): "
      f"p50 {percentile(50):.1f} ms  p99 {percentile(99):.1f} ms  max {latencies[-1]:.1f} ms")
