//! The broker's ceiling for the Kafka benchmark: a plain rdkafka producer sending N messages of
//! a given size, with headers the size of Headwater's lineage headers and the producer settings
//! Headwater uses, waiting for every delivery report.
//!
//!   cargo run --release -p headwater-kafka --example produce_ceiling -- BROKERS TOPIC COUNT BYTES

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, topic, count, bytes] = args.as_slice() else {
        return Err("usage: produce_ceiling BROKERS TOPIC COUNT BYTES".into());
    };
    let count: usize = count.parse()?;
    let bytes: usize = bytes.parse()?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    admin
        .create_topics(
            [&NewTopic::new(topic, 6, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "100000")
        .set("partitioner", "murmur2_random")
        .create()?;
    let payload: Vec<u8> = (0..bytes).map(|i| (i * 31 % 251) as u8).collect();
    let started = Instant::now();
    for i in 0..count {
        let key = (i as u64).to_be_bytes();
        let position = format!(
            "mariadb-bin.000002:{:08}+{} rows (gtid 0-1-{})",
            i / 1000 * 190_000,
            i % 1000 + 1,
            i / 1000
        );
        let headers = OwnedHeaders::new_with_capacity(4)
            .insert(Header {
                key: "headwater.position",
                value: Some(position.as_bytes()),
            })
            .insert(Header {
                key: "headwater.op",
                value: Some("c".as_bytes()),
            })
            .insert(Header {
                key: "headwater.namespace",
                value: Some("bench".as_bytes()),
            })
            .insert(Header {
                key: "headwater.table",
                value: Some("items".as_bytes()),
            });
        let mut record = BaseRecord::to(topic)
            .key(&key[..])
            .payload(&payload[..])
            .headers(headers);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    producer.poll(Duration::from_millis(5));
                }
                Err((err, _)) => return Err(err.into()),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(300))?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{count} messages of {bytes} bytes in {seconds:.2} s: {:.0} msg/s, {:.1} MB/s",
        count as f64 / seconds,
        (count * bytes) as f64 / seconds / 1e6
    );
    Ok(())
}
