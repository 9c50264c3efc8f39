"""An independent consumer for the Kafka tests: reads every message of the given topics from
the beginning with confluent-kafka and its AvroDeserializer (schemas fetched from the registry
by the id in each message), and prints one JSON line per message:
{"topic", "partition", "offset", "key", "value", "headers"}.

Usage: kafka_consume.py BROKERS REGISTRY_URL|json IDLE_SECONDS TOPIC [TOPIC ...]
Extra client settings (SASL, TLS) come as a JSON object in KAFKA_CLIENT_CONFIG; with
KAFKA_MAX_MESSAGES it stops after that many messages (for topics a running writer keeps filling).
"""
import json
import os
import sys

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.serialization import MessageField, SerializationContext

from avro_decode import plain  # the same JSON rendering as the lake tests

brokers, registry, idle, topics = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]

if registry != "json":
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer

    deserializer = AvroDeserializer(SchemaRegistryClient({"url": registry}))
else:
    deserializer = None


def decode(data, topic, field):
    if data is None:
        return None
    if deserializer is None:
        return json.loads(data)
    return plain(deserializer(data, SerializationContext(topic, field)))


settings = {"bootstrap.servers": brokers, "group.id": "headwater-tests", "enable.auto.commit": False}
settings.update(json.loads(os.environ.get("KAFKA_CLIENT_CONFIG", "{}")))
consumer = Consumer(settings)
assignment = []
for topic in topics:
    metadata = consumer.list_topics(topic, timeout=10)
    for partition in metadata.topics[topic].partitions:
        assignment.append(TopicPartition(topic, partition, 0))
consumer.assign(assignment)
limit = int(os.environ.get("KAFKA_MAX_MESSAGES", "0"))
seen = 0
while not limit or seen < limit:
    message = consumer.poll(idle)
    if message is None:
        break
    if message.error():
        continue
    seen += 1
    headers = {k: v.decode() for k, v in (message.headers() or [])}
    print(json.dumps({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "key": decode(message.key(), message.topic(), MessageField.KEY),
        "value": decode(message.value(), message.topic(), MessageField.VALUE),
        "headers": headers,
    }, sort_keys=True))
consumer.close()
